from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.clusters.models import Cluster, ClusterGrant
from apps.core.models import BaseModel

# The ended statuses, sorted: the "active" filter and its partial index spell them alike, so
# PostgreSQL sees the query's condition is the index's.
ACTIVE_EXCLUDES = ["cancelled", "completed", "failed", "node_fail", "out_of_memory", "timeout"]


class Job(BaseModel):
    """One sbatch submission of a user's own script, as their granted cluster account."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued in hub"
        SUBMITTING = "submitting", "Submitting"
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        TIMEOUT = "timeout", "Timed out"
        OUT_OF_MEMORY = "out_of_memory", "Out of memory"
        NODE_FAIL = "node_fail", "Node failure"
        UNKNOWN = "unknown", "Unknown"

    TERMINAL = frozenset(
        {
            Status.COMPLETED,
            Status.FAILED,
            Status.CANCELLED,
            Status.TIMEOUT,
            Status.OUT_OF_MEMORY,
            Status.NODE_FAIL,
        }
    )
    # Where Slurm may take a job from any of its own states.
    _SLURM = frozenset({Status.PENDING, Status.RUNNING, *TERMINAL})
    TRANSITIONS = {
        # A cluster that is down sends a submission back to the hub's queue (with back-off).
        Status.QUEUED: frozenset({Status.SUBMITTING, Status.CANCELLED}),
        Status.SUBMITTING: frozenset({Status.QUEUED, Status.UNKNOWN, *_SLURM}),
        # Reconciliation either finds the job by its marker or, once sure it never reached
        # Slurm, returns it to the queue.
        Status.UNKNOWN: frozenset({Status.QUEUED, *_SLURM}),
        Status.PENDING: frozenset({Status.RUNNING, Status.UNKNOWN, *TERMINAL}),
        Status.RUNNING: frozenset({Status.UNKNOWN, *TERMINAL}),
        **{s: frozenset() for s in TERMINAL},
    }
    ACTIVE_ON_CLUSTER = frozenset({Status.PENDING, Status.RUNNING})
    # `tracking_mode` of a sweep's wave (a job array): the job has no MLflow run of its own
    # and nothing is asked of MLflow before its sbatch. Its tasks log to their trials' runs,
    # which the sweep makes after sbatch, as the job's own MLflow login, which the sweep makes
    # then too and hands the tasks in a 0600 file (apps.sweeps.advance); `finish_run` deletes
    # the login as for any job. Otherwise the field is the cluster's mode, server or file.
    TRACKING_TRIALS = "trials"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="jobs")
    grant = models.ForeignKey(ClusterGrant, on_delete=models.PROTECT, related_name="jobs")
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="jobs")
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)

    # What was asked, recorded once at creation and never edited.
    script = models.TextField()
    script_sha256 = models.CharField(max_length=64)
    parameters = models.JSONField(default=dict, blank=True)
    effective_request = models.JSONField(default=dict, blank=True)
    hub_args = models.JSONField(default=list, blank=True, help_text="The hub's own sbatch options.")
    script_directives = models.JSONField(
        null=True,
        blank=True,
        help_text="The script's directives as validated ([line, option, value, text]); null for jobs recorded before.",
    )
    cluster_username = models.CharField(max_length=64)
    marker = models.CharField(max_length=64, unique=True, help_text="Unique comment that finds the job on Slurm.")
    workdir = models.CharField(max_length=1000)
    stdout_path = models.CharField(max_length=1000)
    stderr_path = models.CharField(max_length=1000)
    rerun_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns")
    reproduced_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reproductions"
    )
    team = models.ForeignKey("accounts.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="jobs")
    dataset_versions = models.ManyToManyField("datasets.DatasetVersion", blank=True, related_name="jobs")
    code_repo = models.CharField(max_length=500, blank=True)
    code_ref = models.CharField(max_length=200, blank=True, help_text="Branch, tag or commit as asked.")
    code_commit = models.CharField(max_length=64, blank=True, help_text="The commit SHA it resolved to at submission.")
    image_path = models.CharField(max_length=1000, blank=True, help_text="Apptainer/Singularity image on the cluster.")
    image_digest = models.CharField(max_length=80, blank=True, help_text="sha256 of the image file at submission.")
    verify_datasets = models.BooleanField(default=False, help_text="Re-verify dataset checksums before submission.")
    register_model_as = models.CharField(
        max_length=200, blank=True, help_text="Register the run's logged model under this name when the job completes."
    )

    # Tracking.
    tracking_mode = models.CharField(max_length=8, blank=True)
    mlflow_experiment_id = models.CharField(max_length=64, blank=True)
    mlflow_run_id = models.CharField(max_length=64, blank=True, db_index=True)
    mlflow_login = models.CharField(
        max_length=64,
        blank=True,
        db_index=True,
        help_text="The MLflow user the job logs in as when the jobs of its submission batch share one "
        "(apps.jobs.tracking.shared_login); empty: a user of its own, axle-job-<uuid>.",
    )
    mlflow_run_by_hub = models.BooleanField(
        default=False,
        help_text="The job's code made no run in its experiment (or none the hub found): the hub made "
        "its run when it ended (apps.jobs.tracking.RUN_MADE_BY_TAG).",
    )
    metrics = models.JSONField(default=dict, blank=True, help_text="Final value of each metric.")
    import_state = models.JSONField(default=dict, blank=True, help_text="Offsets of the file store already imported.")
    finalized_at = models.DateTimeField(null=True, blank=True)

    # What Slurm says.
    slurm_job_id = models.CharField(max_length=32, blank=True, db_index=True)
    slurm_state = models.CharField(max_length=32, blank=True)
    reason = models.CharField(max_length=255, blank=True)
    estimated_start = models.DateTimeField(null=True, blank=True)
    accounting = models.JSONField(default=dict, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    failure_message = models.TextField(blank=True, help_text="Slurm's own words when it refused the job.")

    # Delivery bookkeeping.
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    unknown_since = models.DateTimeField(null=True, blank=True)
    # The API's Idempotency-Key: a POST sent again gets the job the first one made.
    idempotency_key = models.CharField(max_length=128, blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["cluster", "status"]),
            # Every filter of the job lists, each in the lists' order (newest first, id breaking
            # ties) so a page, however deep, and the keyset cursor read an index range.
            models.Index(fields=["owner", "-created_at", "-id"], name="jobs_owner_created"),
            models.Index(fields=["owner", "status", "-created_at", "-id"], name="jobs_owner_status_created"),
            models.Index(fields=["owner", "cluster", "-created_at", "-id"], name="jobs_owner_cluster_created"),
            models.Index(
                fields=["owner", "-created_at", "-id"],
                condition=~models.Q(status__in=ACTIVE_EXCLUDES),
                name="jobs_owner_active_created",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="job_idempotency_key_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.slurm_job_id or self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def elapsed_seconds(self) -> int | None:
        """Run time so far (still running) or in all (ended): Slurm's figure once it gave one."""
        if self.accounting.get("elapsed_seconds") is not None and self.is_terminal:
            return int(self.accounting["elapsed_seconds"])
        if not self.started_at:
            return None
        end = self.finished_at if self.is_terminal and self.finished_at else timezone.now()
        return max(int((end - self.started_at).total_seconds()), 0)

    @property
    def is_array(self) -> bool:
        return bool(self.effective_request.get("array"))


class JobTask(models.Model):
    """One task of an array job, as Slurm reports it."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="tasks")
    task_id = models.CharField(max_length=64)
    slurm_job_id = models.CharField(max_length=32, blank=True)
    state = models.CharField(max_length=32, blank=True)
    reason = models.CharField(max_length=255, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    accounting = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["job", "task_id"]
        constraints = [models.UniqueConstraint(fields=["job", "task_id"], name="jobtask_unique")]

    def __str__(self) -> str:
        return f"{self.job_id}[{self.task_id}]"


class HubExperiment(models.Model):
    """An MLflow experiment the hub made itself for a team or a user (`apps.jobs.experiments`).

    Any MLflow login may create experiments, and manages what it creates: the hub never puts
    a team's runs in an experiment merely found by its name. `name` is the hub's name for it
    (`team-<team>`, `user-<username>`); `mlflow_name` the experiment's name in MLflow, the same
    unless another login had taken it first. `key` is whose it is (`team:<pk>`, `user:<pk>`):
    the row is found by it, so a team renamed keeps its experiment, and a new team given the
    old name does not get it (nor the renamed team's runs)."""

    key = models.CharField(
        max_length=64,
        unique=True,
        null=True,
        help_text="Whose experiment: team:<pk> or user:<pk> (empty for a record whose team or user is gone).",
    )
    name = models.CharField(max_length=200, help_text="The team's or user's experiment name when it was made.")
    mlflow_name = models.CharField(max_length=255)
    experiment_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name
