import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.core.models import BaseModel
from apps.integrations.slurm.names import name_problem


def slurm_bin_dir_problem(value: str) -> str | None:
    # Joined with a program name into one argv word (then quoted): still refuse anything a
    # person would not mean, so a typo cannot turn into an odd path.
    if not re.fullmatch(r"/[A-Za-z0-9._+/-]*", value or "") or "/../" in f"{value}/":
        return "Give Slurm's folder as an absolute path such as /usr/bin, with letters, digits, '.', '_', '+', '-'."
    return None


GRANT_NAME_FIELDS = {
    "allowed_partitions": "Partition",
    "allowed_accounts": "Account",
    "allowed_qos": "QoS",
}


def grant_name_problems(*, cluster_username: str | None = None, **lists) -> dict[str, str]:
    """The one rule for the names a grant hands to Slurm (`--user=`, `-p`, `where name=`):
    a problem per field, for the fields given. A blank username is left to the callers
    (a requested grant has none yet)."""
    problems: dict[str, str] = {}
    if cluster_username and (problem := name_problem(cluster_username, "The cluster username")):
        problems["cluster_username"] = problem
    for field_name, what in GRANT_NAME_FIELDS.items():
        values = lists.get(field_name)
        if values is None:
            continue
        if not isinstance(values, list):
            problems[field_name] = f"{what} names must be a list."
            continue
        for value in values:
            if problem := name_problem(value if isinstance(value, str) else repr(value), what):
                problems[field_name] = problem
                break
    return problems


def validate_slurm_bin_dir(value: str) -> None:
    if problem := slurm_bin_dir_problem(value):
        raise ValidationError(problem)


NOT_ENFORCED = (
    "Grants are not enforced by Slurm on this cluster: the hub checks every script it submits, but a job "
    "that runs sbatch itself, or a login on the cluster, can go beyond the grant. An administrator sets "
    "an operator grant to have Slurm enforce them."
)


class Cluster(BaseModel):
    """A Slurm cluster (a spoke), reached only through Slurm's own interfaces."""

    class Transport(models.TextChoices):
        SSH = "ssh", "SSH to a login node"
        REST = "rest", "slurmrestd"

    name = models.SlugField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    transport = models.CharField(max_length=8, choices=Transport.choices, default=Transport.SSH)
    is_active = models.BooleanField(default=True)

    # The login node: jobs go through it over SSH; a REST cluster reads job logs through it.
    login_host = models.CharField(max_length=255, blank=True)
    login_port = models.PositiveIntegerField(default=22)
    host_key = models.TextField(
        blank=True,
        help_text="The login node's public host key(s), one per line, e.g. 'ssh-ed25519 AAAA…'. "
        "Connections are refused unless the server presents one of these.",
    )
    host_key_fingerprint = models.CharField(
        max_length=128, blank=True, help_text="SHA256 fingerprint(s) an administrator confirmed."
    )

    slurm_bin_dir = models.CharField(
        max_length=255,
        default="/usr/bin",
        validators=[validate_slurm_bin_dir],
        help_text="Where sbatch, squeue, sacct… live on the login node. The hub runs them by this "
        "absolute path, so nothing on the user's PATH can stand in for them.",
    )

    rest_url = models.URLField(blank=True, help_text="slurmrestd base URL, e.g. http://login:6820")
    rest_api_version = models.CharField(max_length=16, default="v0.0.38")
    jwt_key_encrypted = models.TextField(
        blank=True, editable=False, help_text="Cluster-level JWT signing key (encrypted); mints per-user tokens."
    )

    job_root = models.CharField(
        max_length=500,
        default="/home/{username}/axle-jobs",
        help_text="Where users' job folders live on the cluster; {username} is the cluster username.",
    )

    class TrackingMode(models.TextChoices):
        SERVER = "server", "Compute nodes reach the hub's MLflow server"
        FILE = "file", "File store in the job folder, pulled by the hub"

    tracking_mode = models.CharField(
        max_length=8,
        choices=TrackingMode.choices,
        default=TrackingMode.SERVER,
        help_text="Many HPC sites' compute nodes cannot reach the hub: then jobs log to files the hub pulls.",
    )
    mlflow_tracking_uri = models.CharField(
        max_length=500, blank=True, help_text="MLflow tracking URI as seen from the compute nodes."
    )

    # Slurm enforces the grants too when the hub holds an operator's account on the cluster:
    # that grant's credential runs sacctmgr to write each grant's limits (apps.clusters.enforcement).
    operator_grant = models.ForeignKey(
        "ClusterGrant",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="A grant whose cluster account is a Slurm operator (AdminLevel=Operator). When set, the "
        "hub writes every grant's limits to the user's Slurm associations with sacctmgr.",
    )
    usage_all_jobs = models.BooleanField(
        "usage: every job of the granted accounts",
        default=False,
        help_text="Count in usage every job Slurm's accounting has for the granted Slurm accounts, not only the "
        "jobs the hub submitted. Read with the operator grant's account (one sacct call per cluster).",
    )
    enforcement = models.JSONField(
        default=dict, blank=True, editable=False, help_text="The last comparison of grants with Slurm's associations."
    )

    # Health, from the periodic sinfo-style read.
    reachable = models.BooleanField(null=True)
    last_error = models.TextField(blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    state = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        if self.transport == self.Transport.SSH and not self.login_host:
            errors["login_host"] = "A cluster reached over SSH needs its login host."
        if self.transport == self.Transport.REST and not self.rest_url:
            errors["rest_url"] = "A cluster reached through slurmrestd needs its URL."
        if "{username}" not in self.job_root:
            errors["job_root"] = "The job root must contain {username}, so that users never share a folder."
        if errors:
            raise ValidationError(errors)

    @property
    def grants_enforced_by_slurm(self) -> bool:
        """Whether the hub writes the grants to Slurm here (an operator grant is set)."""
        return self.operator_grant_id is not None

    @property
    def enforcement_note(self) -> str:
        """What an administrator must know when Slurm does not enforce the grants; '' when it does."""
        return "" if self.grants_enforced_by_slurm else NOT_ENFORCED

    @property
    def has_jwt_key(self) -> bool:
        return bool(self.jwt_key_encrypted)

    def job_root_for(self, username: str) -> str:
        return self.job_root.replace("{username}", username)


NO_LIMIT = "Blank means no limit (beyond Slurm's own)."
LIMIT_FIELDS = (
    "allowed_partitions",
    "allowed_accounts",
    "allowed_qos",
    "max_nodes",
    "max_cpus",
    "max_gpus",
    "max_mem_mb",
    "max_time_minutes",
    "max_active_jobs",
    "max_array_size",
)


class ClusterGrant(BaseModel):
    """Access for one user to one cluster, as one cluster account, within limits."""

    class Status(models.TextChoices):
        REQUESTED = "requested", "Requested"
        ACTIVE = "active", "Active"
        DECLINED = "declined", "Declined"
        REVOKED = "revoked", "Revoked"
        SUSPENDED = "suspended", "Suspended"

    TRANSITIONS = {
        Status.REQUESTED: {Status.ACTIVE, Status.DECLINED},
        Status.ACTIVE: {Status.REVOKED, Status.SUSPENDED},
        Status.SUSPENDED: {Status.ACTIVE, Status.REVOKED},
        Status.DECLINED: set(),
        Status.REVOKED: set(),
    }
    TERMINAL = {Status.DECLINED, Status.REVOKED}

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="grants")
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="grants")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.REQUESTED)
    cluster_username = models.CharField(
        max_length=64, blank=True, help_text="The Unix account jobs run as. Set by an administrator only."
    )

    # Limits. A blank list means the script may not choose (Slurm's default for the user
    # applies); None on a number means no limit beyond Slurm's own.
    allowed_partitions = models.JSONField(
        "Allowed partitions",
        default=list,
        blank=True,
        help_text='A JSON list, e.g. ["debug", "gpu"]. Empty: the script may not choose one; the '
        "cluster's default partition applies.",
    )
    allowed_accounts = models.JSONField(
        "Allowed Slurm accounts",
        default=list,
        blank=True,
        help_text="A JSON list. Empty: the script may not choose one; the user's default account applies.",
    )
    allowed_qos = models.JSONField(
        "Allowed QOS",
        default=list,
        blank=True,
        help_text="A JSON list. Empty: the script may not choose one; the default QOS applies.",
    )
    max_nodes = models.PositiveIntegerField("Max nodes", null=True, blank=True, help_text=f"Per job. {NO_LIMIT}")
    max_cpus = models.PositiveIntegerField("Max CPUs", null=True, blank=True, help_text=f"Per job. {NO_LIMIT}")
    max_gpus = models.PositiveIntegerField("Max GPUs", null=True, blank=True, help_text=f"Per job. {NO_LIMIT}")
    max_mem_mb = models.PositiveIntegerField(
        "Max memory (MB)", null=True, blank=True, help_text=f"Per job, in megabytes (1024 MB = 1 GB). {NO_LIMIT}"
    )
    max_time_minutes = models.PositiveIntegerField(
        "Max time (minutes)", null=True, blank=True, help_text=f"Wall-clock time per job. {NO_LIMIT}"
    )
    max_active_jobs = models.PositiveIntegerField(
        "Max active jobs", null=True, blank=True, help_text=f"Queued or running at once. {NO_LIMIT}"
    )
    max_array_size = models.PositiveIntegerField(
        "Max array size", null=True, blank=True, help_text=f"Tasks in one job array (sweeps). {NO_LIMIT}"
    )
    cpu_hours_per_month = models.PositiveIntegerField(
        "CPU-hours per month",
        null=True,
        blank=True,
        help_text="A budget shown against this grant's usage (from Slurm's accounting), not enforced. "
        "Blank: no budget.",
    )
    gpu_hours_per_month = models.PositiveIntegerField(
        "GPU-hours per month",
        null=True,
        blank=True,
        help_text="A budget shown against this grant's usage (from Slurm's accounting), not enforced. "
        "Blank: no budget.",
    )
    valid_until = models.DateTimeField(
        "Valid until", null=True, blank=True, help_text="Blank: the grant does not expire."
    )

    request_reason = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.TextField(blank=True)

    # Credentials, encrypted at rest with apps.core.crypto; never rendered or logged.
    ssh_private_key_encrypted = models.TextField(blank=True, editable=False)
    ssh_public_key = models.TextField(blank=True, editable=False)
    rest_token_encrypted = models.TextField(blank=True, editable=False)
    rest_token_expires_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["cluster__name", "user__username"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "cluster"],
                condition=Q(status__in=["requested", "active"]),
                name="grant_one_open_per_user_cluster",
            )
        ]

    def limit_rows(self) -> list[tuple[str, str]]:
        """The grant's limits as a person reads them: (label with unit, value or "no limit")."""
        rows = []
        for name in LIMIT_FIELDS:
            field = self._meta.get_field(name)
            value = getattr(self, name)
            if name.startswith("allowed_"):
                shown = ", ".join(value) if value else "the cluster's default only"
            elif value is None:
                shown = "no limit"
            elif name == "max_mem_mb":
                shown = f"{value:,} MB" + (f" ({value / 1024:.3g} GB)" if value >= 1024 else "")
            elif name == "max_time_minutes":
                hours, minutes = divmod(value, 60)
                shown = f"{value:,} min" + (f" ({hours} h {minutes:02d})" if hours else "")
            else:
                shown = f"{value:,}"
            rows.append((str(field.verbose_name), shown))
        return rows

    def __str__(self) -> str:
        who = self.cluster_username or "?"
        return f"{self.user} on {self.cluster} as {who}"

    def clean(self) -> None:
        problems = grant_name_problems(
            cluster_username=self.cluster_username, **{f: getattr(self, f) for f in GRANT_NAME_FIELDS}
        )
        if problems:
            raise ValidationError(problems)

    @property
    def is_usable(self) -> bool:
        return (
            self.status == self.Status.ACTIVE
            and bool(self.cluster_username)
            and self.cluster.is_active
            and (self.valid_until is None or self.valid_until > timezone.now())
        )

    @property
    def has_ssh_key(self) -> bool:
        return bool(self.ssh_private_key_encrypted)

    @property
    def has_rest_token(self) -> bool:
        return bool(self.rest_token_encrypted)

    @property
    def job_root(self) -> str:
        return self.cluster.job_root_for(self.cluster_username)
