"""Forms for the clusters admin and pages. They validate what they can before a service runs, so
a refusal shows on the field it concerns; the services check again and do the writing."""

import base64
import binascii

from django import forms
from django.contrib.admin.widgets import AdminSplitDateTime
from django.utils import timezone

from apps.core.errors import ValidationFailed
from apps.integrations.slurm.names import name_problem
from apps.integrations.slurm.ssh import load_private_key

from . import services
from .models import Cluster, ClusterGrant

MAX_SECRET_UPLOAD = 64 * 1024


class SecretTextarea(forms.Textarea):
    """A textarea that never renders what was typed into it: a form shown again with an error
    must not put a private key back into the page."""

    def format_value(self, value):
        return None


def _read_upload(upload, what: str) -> bytes:
    if upload.size > MAX_SECRET_UPLOAD:
        raise forms.ValidationError(f"That file is too large for {what} ({upload.size} bytes).")
    return upload.read()


class CommaListField(forms.CharField):
    """'debug, gpu' in the form, ["debug", "gpu"] in the JSON field; each a plain Slurm name."""

    def __init__(self, *args, what: str = "Name", **kwargs):
        self.what = what
        super().__init__(*args, **kwargs)

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return ", ".join(str(v) for v in value)
        return value

    def to_python(self, value):
        text = super().to_python(value) or ""
        items = [item.strip() for item in text.replace("\n", ",").split(",")]
        seen: list[str] = []
        for item in items:
            if item and item not in seen:
                if any(ch.isspace() for ch in item):
                    raise forms.ValidationError(f"“{item}” has a space in it; separate names with commas.")
                if problem := name_problem(item, self.what):
                    raise forms.ValidationError(problem)
                seen.append(item)
        return seen


class ClusterAdminForm(forms.ModelForm):
    rest_url = forms.CharField(
        required=False, max_length=200, label="slurmrestd URL", help_text="e.g. http://login:6820"
    )
    new_host_key = forms.CharField(
        required=False,
        label="Pin a host key",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 90, "placeholder": "ssh-ed25519 AAAA…"}),
        help_text="The login node's public host key line(s), e.g. from /etc/ssh/ssh_host_ed25519_key.pub "
        "on the login node. A known_hosts line works too.",
    )
    confirmed_fingerprint = forms.CharField(
        required=False,
        label="Fingerprint you confirmed",
        help_text="SHA256:… as the cluster's administrators read it to you (ssh-keygen -lf on the login node). "
        "The key is pinned only if it matches.",
    )
    jwt_key_file = forms.FileField(required=False, label="JWT signing key file", help_text="Slurm's jwt_hs256.key.")
    jwt_key_base64 = forms.CharField(
        required=False,
        label="…or the JWT signing key, base64",
        widget=forms.PasswordInput(render_value=False),
        help_text="Replaces the stored key. Stored encrypted and never shown again.",
    )

    class Meta:
        model = Cluster
        fields = list(services.CLUSTER_CONFIG_FIELDS)

    def _get_validation_exclusions(self):
        # The model's URLValidator refuses hosts without a domain; clean_rest_url checks instead.
        return {*super()._get_validation_exclusions(), "rest_url"}

    def clean_rest_url(self):
        try:
            return services.rest_url_check(self.cleaned_data.get("rest_url") or "")
        except ValidationFailed as exc:
            raise forms.ValidationError(exc.message) from None

    def clean(self):
        data = super().clean()
        host_key = (data.get("new_host_key") or "").strip()
        confirmed = (data.get("confirmed_fingerprint") or "").strip()
        if host_key or confirmed:
            try:
                services.host_key_confirm(host_key=host_key, confirmed_fingerprint=confirmed)
            except ValidationFailed as exc:
                self.add_error("confirmed_fingerprint" if host_key else "new_host_key", exc.message)

        upload, text = data.get("jwt_key_file"), (data.get("jwt_key_base64") or "").strip()
        data["jwt_key"] = None
        if upload and text:
            self.add_error("jwt_key_base64", "Give the JWT key as a file or as base64, not both.")
        elif upload:
            try:
                data["jwt_key"] = _read_upload(upload, "a JWT key")
            except forms.ValidationError as exc:
                self.add_error("jwt_key_file", exc)
        elif text:
            try:
                data["jwt_key"] = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                self.add_error("jwt_key_base64", "That is not base64 (e.g. base64 -w0 jwt_hs256.key).")
        key = data["jwt_key"]
        if key is not None and len(key) < services.JWT_KEY_MIN_BYTES:
            field = "jwt_key_file" if upload else "jwt_key_base64"
            self.add_error(
                field,
                f"A JWT signing key must be at least {services.JWT_KEY_MIN_BYTES} bytes; this one has {len(key)}.",
            )
        return data


DECISIONS = {
    "approve": ClusterGrant.Status.ACTIVE,
    "decline": ClusterGrant.Status.DECLINED,
    "revoke": ClusterGrant.Status.REVOKED,
}


class ClusterGrantAdminForm(forms.ModelForm):
    allowed_partitions = CommaListField(
        required=False,
        what="Partition",
        help_text="Comma-separated. Blank: the script may not choose one (the cluster's default partition only).",
    )
    allowed_accounts = CommaListField(
        required=False,
        what="Account",
        help_text="Comma-separated Slurm accounts. Blank: the script may not choose one (the user's default account).",
    )
    allowed_qos = CommaListField(required=False, what="QoS", help_text="Comma-separated QoS names.")

    decision = forms.ChoiceField(
        required=False,
        choices=[("", "— keep the status —"), ("approve", "Approve"), ("decline", "Decline"), ("revoke", "Revoke")],
    )
    decision_note = forms.CharField(required=False, label="Comment on the decision", max_length=1000)

    generate_ssh_key = forms.BooleanField(
        required=False,
        label="Generate a new SSH key pair",
        help_text="Replaces the grant's current key. The public key is shown once you save, to install in the "
        "cluster account's ~/.ssh/authorized_keys.",
    )
    ssh_private_key_file = forms.FileField(required=False, label="Upload a private key")
    ssh_private_key_text = forms.CharField(
        required=False,
        label="…or paste a private key",
        widget=SecretTextarea(attrs={"rows": 4, "cols": 70, "autocomplete": "off"}),
        help_text="Unencrypted OpenSSH or PEM. Stored encrypted and never shown again.",
    )
    rest_token = forms.CharField(
        required=False,
        label="slurmrestd token",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="A token for this cluster username (scontrol token). Stored encrypted and never shown again.",
    )
    rest_token_expires = forms.SplitDateTimeField(required=False, label="Token expires at", widget=AdminSplitDateTime)

    class Meta:
        model = ClusterGrant
        fields = ["user", "cluster", "cluster_username", *services.LIMIT_FIELDS]

    def clean(self):
        data = super().clean()
        adding = self.instance.pk is None
        user = data.get("user") or (self.instance.user if not adding else None)
        directory_uid = getattr(user, "directory_uid", "")
        if directory_uid and not data.get("cluster_username") and "cluster_username" not in self.errors:
            # On HPC sites the directory's uid (LDAP) is the cluster account: used when left blank.
            data["cluster_username"] = directory_uid

        decision = data.get("decision")
        if decision:
            current = ClusterGrant.objects.filter(pk=self.instance.pk).values_list("status", flat=True).first()
            if adding:
                self.add_error("decision", "A grant made here is active at once; there is nothing to decide.")
            elif DECISIONS[decision] not in ClusterGrant.TRANSITIONS.get(current, ()):
                self.add_error("decision", f"A {current} grant cannot be {DECISIONS[decision].label.lower()}.")
            elif decision == "approve" and not data.get("cluster_username"):
                self.add_error("cluster_username", "Set the cluster username this user's jobs run as before approving.")
        if adding and not data.get("cluster_username"):
            self.add_error("cluster_username", "A grant made here is active at once, so it needs the cluster username.")

        upload, text = data.get("ssh_private_key_file"), (data.get("ssh_private_key_text") or "").strip()
        chosen = [
            name
            for name, given in (("generate", data.get("generate_ssh_key")), ("file", upload), ("text", text))
            if given
        ]
        data["ssh_private_key"] = None
        if len(chosen) > 1:
            self.add_error("generate_ssh_key", "Generate a key, upload one, or paste one: only one of them.")
        elif upload or text:
            field = "ssh_private_key_file" if upload else "ssh_private_key_text"
            try:
                pem = _read_upload(upload, "a private key").decode("utf-8") if upload else text
                load_private_key(pem.strip() + "\n")
                data["ssh_private_key"] = pem
            except Exception:
                # Never echo the key, nor a parser's message that may quote it.
                self.add_error(field, "That is not an unencrypted SSH private key (OpenSSH or PEM format).")

        token, expires = (data.get("rest_token") or "").strip(), data.get("rest_token_expires")
        if expires and not token:
            self.add_error("rest_token", "Paste the token whose expiry you set.")
        if token and expires and expires <= timezone.now():
            self.add_error("rest_token_expires", "That token has already expired.")
        return data


class GrantRequestForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "What you will run there, and roughly how much."}),
        error_messages={"required": "Say why you need access, so an administrator can decide."},
    )
