"""Writes for clusters and grants. Secrets are encrypted before they touch the database and
never appear in audit data, logs or pages."""

import base64
from dataclasses import asdict
from datetime import datetime
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core import crypto
from apps.core.errors import Conflict, ValidationFailed
from apps.core.transitions import transition
from apps.integrations.slurm.base import ClusterState
from apps.integrations.slurm.ssh import PinnedHostKey, load_private_key

from .enforcement import enforce_later
from .models import LIMIT_FIELDS as PER_JOB_LIMITS
from .models import Cluster, ClusterGrant, grant_name_problems, slurm_bin_dir_problem

# What an administrator sets on a grant: the per-job limits, the monthly budgets and the end date.
LIMIT_FIELDS = (*PER_JOB_LIMITS, "cpu_hours_per_month", "gpu_hours_per_month", "valid_until")


def _check_names(cluster_username: str | None, limits: dict) -> None:
    """Refuse a cluster username or partition/account/QoS name Slurm could read as more
    than one name (a comma in `--user=` widens it), with the first problem's sentence."""
    lists = {f: limits[f] for f in ("allowed_partitions", "allowed_accounts", "allowed_qos") if f in limits}
    if problems := grant_name_problems(cluster_username=cluster_username, **lists):
        raise ValidationFailed(" ".join(problems.values()), extra={"fields": problems})


def _refuse_unknown(given: dict, known: tuple[str, ...], what: str) -> None:
    """A caller's mistake (forms and the admin only pass known fields), so ValueError."""
    if unknown := set(given) - set(known):
        raise ValueError(f"Not {what}: {sorted(unknown)}")


def _limits_snapshot(grant: ClusterGrant) -> dict:
    return {f: getattr(grant, f) for f in LIMIT_FIELDS}


# What an administrator configures on a cluster; health and secrets have their own services.
CLUSTER_CONFIG_FIELDS = (
    "name",
    "description",
    "transport",
    "is_active",
    "login_host",
    "login_port",
    "rest_url",
    "rest_api_version",
    "job_root",
    "mlflow_tracking_uri",
    "slurm_bin_dir",
    "usage_all_jobs",
)
JWT_KEY_MIN_BYTES = 16


def host_key_confirm(*, host_key: str, confirmed_fingerprint: str) -> str:
    """Check that the pasted host key lines have the fingerprint the administrator confirmed out
    of band; return the keys' fingerprints. Pure, so forms can show the refusal on the field."""
    lines = [line for line in host_key.strip().splitlines() if line.strip()]
    if not lines:
        raise ValidationFailed("Paste the login node's public host key, e.g. 'ssh-ed25519 AAAA…'.")
    if any(line.strip().startswith("SHA256:") for line in lines):
        raise ValidationFailed("Paste the public key itself, not its fingerprint: Axle computes the fingerprint.")
    try:
        pinned = PinnedHostKey.parse(lines)
    except Exception as exc:  # paramiko and base64 raise several types for a malformed key
        raise ValidationFailed(f"That is not an SSH public host key: {exc}") from None
    confirmed = confirmed_fingerprint.strip()
    if not confirmed:
        raise ValidationFailed("Type the SHA256 fingerprint you confirmed with the cluster's administrators.")
    if not confirmed.startswith("SHA256:"):
        confirmed = f"SHA256:{confirmed}"
    if confirmed.rstrip("=") not in pinned.fingerprints:
        raise ValidationFailed(
            f"The fingerprint you confirmed ({confirmed}) is not the key's fingerprint "
            f"({', '.join(sorted(pinned.fingerprints))}). Check it with the cluster's administrators."
        )
    return ", ".join(sorted(pinned.fingerprints))


def rest_url_check(url: str) -> str:
    """slurmrestd URLs often name a host without a domain (http://login:6820), which Django's
    URLValidator refuses; accept any http(s) URL with a host."""
    url = url.strip()
    if not url:
        return url
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValidationFailed(f"The slurmrestd URL {url} has a port that is not a number.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed(f"The slurmrestd URL must look like http://host:6820, not {url}.")
    return url.rstrip("/")


def cluster_create(*, actor, **fields) -> Cluster:
    _refuse_unknown(fields, CLUSTER_CONFIG_FIELDS, "cluster settings")
    if Cluster.objects.filter(name=fields.get("name", "")).exists():
        raise ValidationFailed(f"A cluster named {fields['name']} exists already.")
    with transaction.atomic():
        cluster = Cluster(**fields)
        cluster.rest_url = rest_url_check(cluster.rest_url)
        cluster.full_clean(exclude=["reachable", "last_error", "checked_at", "state", "rest_url"])
        cluster.save()
        audit_record(
            action="cluster.created",
            subject=cluster,
            actor=actor,
            after={f: getattr(cluster, f) for f in CLUSTER_CONFIG_FIELDS},
        )
    return cluster


def cluster_update(*, cluster: Cluster, actor, **fields) -> Cluster:
    """Change a cluster's settings; audit only what changed, with its old and new value."""
    _refuse_unknown(fields, CLUSTER_CONFIG_FIELDS, "cluster settings")
    if "rest_url" in fields:
        fields["rest_url"] = rest_url_check(fields["rest_url"])
    if problem := slurm_bin_dir_problem(fields.get("slurm_bin_dir", "/")):
        raise ValidationFailed(problem)
    before, after = {}, {}
    for name, value in fields.items():
        if getattr(cluster, name) != value:
            before[name], after[name] = getattr(cluster, name), value
            setattr(cluster, name, value)
    if not after:
        return cluster
    with transaction.atomic():
        cluster.save(update_fields=[*after, "updated_at"])
        audit_record(action="cluster.updated", subject=cluster, actor=actor, before=before, after=after)
        if "is_active" in after:
            enforce_later(cluster)  # out of service: its users' Slurm access is closed too
    return cluster


def cluster_set_host_key(*, cluster: Cluster, host_key: str, confirmed_fingerprint: str, actor) -> Cluster:
    """Pin the login node's host key once an administrator confirmed its fingerprint."""
    fingerprints = host_key_confirm(host_key=host_key, confirmed_fingerprint=confirmed_fingerprint)
    with transaction.atomic():
        before = {"host_key_fingerprint": cluster.host_key_fingerprint}
        cluster.host_key = "\n".join(line.strip() for line in host_key.strip().splitlines() if line.strip())
        cluster.host_key_fingerprint = fingerprints
        cluster.save(update_fields=["host_key", "host_key_fingerprint", "updated_at"])
        audit_record(
            action="cluster.host_key_pinned",
            subject=cluster,
            actor=actor,
            before=before,
            after={"host_key_fingerprint": cluster.host_key_fingerprint},
        )
    return cluster


def cluster_set_jwt_key(*, cluster: Cluster, key: bytes, actor) -> Cluster:
    if len(key) < JWT_KEY_MIN_BYTES:
        raise ValidationFailed(
            f"A JWT signing key must be at least {JWT_KEY_MIN_BYTES} bytes; this one has {len(key)}."
        )
    with transaction.atomic():
        cluster.jwt_key_encrypted = crypto.encrypt(base64.b64encode(key).decode("ascii"))
        cluster.save(update_fields=["jwt_key_encrypted", "updated_at"])
        audit_record(action="cluster.jwt_key_set", subject=cluster, actor=actor, after={"jwt_key": "set"})
    return cluster


def grant_request(*, user, cluster: Cluster, reason: str) -> ClusterGrant:
    reason = reason.strip()
    if not reason:
        raise ValidationFailed("Say why you need access, so an administrator can decide.")
    if not cluster.is_active:
        raise Conflict(f"Cluster {cluster.name} does not accept new users right now.")
    if ClusterGrant.objects.filter(user=user, cluster=cluster, status__in=["requested", "active"]).exists():
        raise Conflict(f"You already have access to {cluster.name}, or a request waiting for it.")
    try:
        with transaction.atomic():
            grant = ClusterGrant.objects.create(user=user, cluster=cluster, request_reason=reason)
            audit_record(action="grant.requested", subject=grant, actor=user, after={"reason": reason})
    except IntegrityError:
        # Two requests raced past the check above; the constraint let one through.
        raise Conflict(f"You already have access to {cluster.name}, or a request waiting for it.") from None
    return grant


def grant_create(*, user, cluster: Cluster, cluster_username: str, actor, **limits) -> ClusterGrant:
    """An administrator grants access directly (no request)."""
    if not cluster_username:
        raise ValidationFailed("A grant needs the cluster username jobs run as.")
    _check_names(cluster_username, limits)
    with transaction.atomic():
        grant = ClusterGrant.objects.create(
            user=user,
            cluster=cluster,
            cluster_username=cluster_username,
            status=ClusterGrant.Status.ACTIVE,
            decided_by=actor,
            decided_at=timezone.now(),
            **limits,
        )
        audit_record(
            action="grant.created",
            subject=grant,
            actor=actor,
            after={"cluster_username": cluster_username, **_limits_snapshot(grant)},
        )
        enforce_later(cluster)
    return grant


def grant_approve(*, grant: ClusterGrant, actor, cluster_username: str, comment: str = "", **limits) -> ClusterGrant:
    if not cluster_username:
        raise ValidationFailed("Set the cluster username this user's jobs run as before approving.")
    _refuse_unknown(limits, LIMIT_FIELDS, "grant limits")
    _check_names(cluster_username, limits)
    # Username and limits go into the same compare-and-swap UPDATE as the status: saving them
    # first would write a stale status back over a decision made meanwhile.
    after = {f: limits.get(f, getattr(grant, f)) for f in LIMIT_FIELDS}
    return _grant_move(
        grant=grant,
        to=ClusterGrant.Status.ACTIVE,
        action="grant.approved",
        actor=actor,
        fields={
            "cluster_username": cluster_username,
            **limits,
            "decided_by": actor,
            "decided_at": timezone.now(),
            "decision_comment": comment,
        },
        data={"cluster_username": cluster_username, **after},
    )


def grant_update_limits(*, grant: ClusterGrant, actor, cluster_username: str | None = None, **limits) -> ClusterGrant:
    """Change a grant's cluster username and limits; audit `grant.updated` with the old and new
    value of what changed (nothing is written when nothing changed)."""
    _refuse_unknown(limits, LIMIT_FIELDS, "grant limits")
    changes = dict(limits)
    if cluster_username is not None:
        cluster_username = cluster_username.strip()
        if not cluster_username and grant.status == ClusterGrant.Status.ACTIVE:
            raise ValidationFailed("An active grant needs the cluster username its jobs run as.")
        changes["cluster_username"] = cluster_username
    _check_names(cluster_username, limits)
    before, after = {}, {}
    for name, value in changes.items():
        if getattr(grant, name) != value:
            before[name], after[name] = getattr(grant, name), value
    if not after:
        return grant
    with transaction.atomic():
        for name, value in after.items():
            setattr(grant, name, value)
        grant.full_clean(exclude=["user", "cluster"], validate_unique=False, validate_constraints=False)
        grant.save(update_fields=[*after, "updated_at"])
        audit_record(action="grant.updated", subject=grant, actor=actor, before=before, after=after)
        enforce_later(grant.cluster)
    return grant


def _grant_move(
    *, grant: ClusterGrant, to: str, action: str, actor, data: dict, fields: dict | None = None, enforce: bool = True
) -> ClusterGrant:
    """Move a grant to another state (compare-and-swap, audited); with `enforce`, bring the
    cluster's Slurm access in line with it afterwards."""
    grant = transition(
        obj=grant, to=to, transitions=ClusterGrant.TRANSITIONS, action=action, actor=actor, fields=fields, data=data
    )
    if enforce:
        enforce_later(grant.cluster)
    return grant


def grant_decline(*, grant: ClusterGrant, actor, comment: str = "") -> ClusterGrant:
    # A request never had access, so there is nothing to enforce.
    return _grant_move(
        grant=grant,
        to=ClusterGrant.Status.DECLINED,
        action="grant.declined",
        actor=actor,
        fields={"decided_by": actor, "decided_at": timezone.now(), "decision_comment": comment},
        data={"comment": comment},
        enforce=False,
    )


def grant_revoke(*, grant: ClusterGrant, actor, comment: str = "") -> ClusterGrant:
    return _grant_move(
        grant=grant, to=ClusterGrant.Status.REVOKED, action="grant.revoked", actor=actor, data={"comment": comment}
    )


def grant_suspend(*, grant: ClusterGrant, actor, reason: str) -> ClusterGrant:
    """Stop a grant's use without ending it (the directory no longer knows its user); an
    administrator resumes it with grant_resume."""
    return _grant_move(
        grant=grant, to=ClusterGrant.Status.SUSPENDED, action="grant.suspended", actor=actor, data={"reason": reason}
    )


def grant_resume(*, grant: ClusterGrant, actor, comment: str = "") -> ClusterGrant:
    return _grant_move(
        grant=grant, to=ClusterGrant.Status.ACTIVE, action="grant.resumed", actor=actor, data={"comment": comment}
    )


def grant_generate_ssh_key(*, grant: ClusterGrant, actor) -> str:
    """Make a key pair for the grant; return the public key for the cluster's authorized_keys."""
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode("ascii")
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    public_line = (
        f"{public.decode('ascii')} axle-{grant.cluster.name}-{grant.cluster_username or grant.user.get_username()}"
    )
    _store_ssh_key(grant=grant, pem=pem, public_line=public_line, actor=actor, how="generated")
    return public_line


def grant_set_ssh_key(*, grant: ClusterGrant, private_key: str, actor) -> ClusterGrant:
    """Store an uploaded private key (OpenSSH or PEM, unencrypted)."""
    try:
        key = load_private_key(private_key.strip() + "\n")
    except Exception:
        # Never echo the key (or paramiko's message, which may quote it).
        raise ValidationFailed("That is not an unencrypted SSH private key (OpenSSH or PEM format).") from None
    public_line = f"{key.get_name()} {key.get_base64()}"
    _store_ssh_key(grant=grant, pem=private_key.strip() + "\n", public_line=public_line, actor=actor, how="uploaded")
    return grant


def _store_ssh_key(*, grant: ClusterGrant, pem: str, public_line: str, actor, how: str) -> None:
    with transaction.atomic():
        grant.ssh_private_key_encrypted = crypto.encrypt(pem)
        grant.ssh_public_key = public_line
        grant.save(update_fields=["ssh_private_key_encrypted", "ssh_public_key", "updated_at"])
        audit_record(
            action="grant.ssh_key_set", subject=grant, actor=actor, after={"how": how, "public_key": public_line}
        )


def grant_set_rest_token(*, grant: ClusterGrant, token: str, expires_at: datetime | None, actor) -> ClusterGrant:
    token = token.strip()
    if not token:
        raise ValidationFailed("Paste the slurmrestd token.")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationFailed("That token has already expired.")
    with transaction.atomic():
        grant.rest_token_encrypted = crypto.encrypt(token)
        grant.rest_token_expires_at = expires_at
        grant.save(update_fields=["rest_token_encrypted", "rest_token_expires_at", "updated_at"])
        audit_record(
            action="grant.rest_token_set",
            subject=grant,
            actor=actor,
            after={"expires_at": expires_at.isoformat() if expires_at else None},
        )
    return grant


def cluster_state_json(state: ClusterState) -> dict:
    """A cluster's partitions and nodes as plain JSON for `Cluster.state`."""
    return {
        "partitions": [asdict(p) for p in state.partitions],
        "nodes": [asdict(n) for n in state.nodes],
        "read_at": timezone.now().isoformat(),
    }


def cluster_record_health(
    *, cluster_id: int, reachable: bool | None, error: str = "", state: ClusterState | None = None
) -> Cluster:
    """Store what a health check found. Only a change of reachability is audited; a check that
    merely confirms what we knew is not an event. Without a fresh state the last known one is
    kept, with the time it was read, so the page can still show it."""
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=cluster_id)
        was = cluster.reachable
        cluster.reachable = reachable
        cluster.last_error = error
        cluster.checked_at = timezone.now()
        fields = ["reachable", "last_error", "checked_at"]
        if state is not None:
            cluster.state = cluster_state_json(state)
            fields.append("state")
        cluster.save(update_fields=fields)
        if reachable is not None and reachable != was:
            audit_record(
                action="cluster.became_reachable" if reachable else "cluster.became_unreachable",
                subject=cluster,
                before={"reachable": was},
                after={"reachable": reachable, "error": error},
            )
    return cluster
