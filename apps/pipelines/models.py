import uuid as uuid_lib

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.clusters.models import Cluster, ClusterGrant
from apps.core.models import BaseModel
from apps.jobs.models import Job


class Pipeline(BaseModel):
    """A pipeline file in a git repository the cluster can reach, run as a grant's account.

    It belongs to a team: a member sees it and runs it; nobody else learns it exists. The
    file is read at each run's commit, so the repository, not the hub, holds its history."""

    team = models.ForeignKey("accounts.Team", on_delete=models.PROTECT, related_name="pipelines")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="pipelines")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    grant = models.ForeignKey(ClusterGrant, on_delete=models.PROTECT, related_name="pipelines")
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="pipelines")
    repo_url = models.CharField(max_length=500, help_text="git URL or path the cluster account can read.")
    branch = models.CharField(max_length=200, default="main")
    path = models.CharField(max_length=500, default="axle-pipeline.yaml", help_text="The pipeline file in the repo.")

    class Meta:
        ordering = ["team", "name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="pipeline_unique_name_per_team")]

    def __str__(self) -> str:
        return self.name


class PipelineRun(BaseModel):
    """One run of a pipeline at one commit: every step compiled into Slurm jobs linked by
    ``--dependency=afterok``."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Trigger(models.TextChoices):
        USER = "user", "User"
        PUSH = "push", "Push"
        POLL = "poll", "Poll"
        SCHEDULE = "schedule", "Schedule"

    TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
    TRANSITIONS = {
        Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}),
        # Retry runs the failed or cancelled steps again, in the same run.
        Status.FAILED: frozenset({Status.RUNNING}),
        Status.CANCELLED: frozenset({Status.RUNNING}),
        Status.SUCCEEDED: frozenset(),
    }

    pipeline = models.ForeignKey(Pipeline, on_delete=models.PROTECT, related_name="runs")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING, db_index=True)
    commit = models.CharField(max_length=64, blank=True)
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.USER)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="pipeline_runs"
    )
    delivery_id = models.CharField(max_length=200, blank=True, help_text="The forge's delivery id for a push.")
    # Whose grant the steps run as: the person who started the run, or the member who
    # registered the trigger that started it (never the pipeline's owner by default).
    grant = models.ForeignKey(
        ClusterGrant, null=True, blank=True, on_delete=models.PROTECT, related_name="pipeline_runs"
    )
    # One trigger's start (a delivery, a poll's new head, a schedule's fire) makes at most one
    # run: starting it again (a re-drive after a worker died mid-start) finds this run.
    trigger_key = models.CharField(max_length=100, blank=True)
    trigger_detail = models.JSONField(default=dict, blank=True)
    spec_text = models.TextField(blank=True, help_text="The pipeline file as read at the commit.")
    spec = models.JSONField(default=dict, blank=True, help_text="The pipeline as validated.")
    parameters = models.JSONField(default=dict, blank=True)
    folder = models.CharField(max_length=1000, blank=True, help_text="The run's folder on the cluster.")
    failed_step = models.CharField(max_length=200, blank=True)
    message = models.TextField(blank=True)
    problems = models.JSONField(default=list, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "number"], name="pipelinerun_unique_number"),
            models.UniqueConstraint(
                fields=["pipeline", "trigger_key"], condition=~Q(trigger_key=""), name="pipelinerun_unique_trigger_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.pipeline.name} #{self.number}"

    @property
    def run_grant(self) -> ClusterGrant:
        """The grant the run's steps run as (runs recorded before runs had their own: the
        pipeline's)."""
        return self.grant if self.grant_id else self.pipeline.grant

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def duration_seconds(self) -> int | None:
        if self.finished_at:
            return int((self.finished_at - self.created_at).total_seconds())
        return None


class StepRun(models.Model):
    """One step of a run: a job on Slurm, or a cache hit that reused an earlier step's outputs."""

    class State(models.TextChoices):
        WAITING = "waiting", "Waiting"  # no job yet: its needs are not on Slurm yet
        SUBMITTED = "submitted", "Submitted"  # a job; the job's own status says more
        COMPLETED = "completed", "Completed"
        CACHED = "cached", "Cached"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    DONE = frozenset({State.COMPLETED, State.CACHED})
    ENDED = frozenset({State.COMPLETED, State.CACHED, State.FAILED, State.CANCELLED})

    run = models.ForeignKey(PipelineRun, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=100)
    position = models.PositiveIntegerField(help_text="Its place in the topological order.")
    needs = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.WAITING, db_index=True)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.PROTECT, related_name="pipeline_steps")
    sweep = models.ForeignKey(
        "sweeps.Sweep", null=True, blank=True, on_delete=models.PROTECT, related_name="pipeline_steps"
    )
    previous_jobs = models.JSONField(default=list, blank=True, help_text="Jobs of earlier attempts (retry).")
    attempt = models.PositiveIntegerField(default=1)
    cache_key = models.CharField(max_length=64, blank=True, db_index=True)
    cached_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reused_by")
    message = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="steprun_unique_name")]

    def __str__(self) -> str:
        return f"{self.run_id}:{self.name}"

    @property
    def duration_seconds(self) -> int | None:
        if self.started_at and self.finished_at:
            return int((self.finished_at - self.started_at).total_seconds())
        return None


class StepOutput(models.Model):
    """A named output folder of a step, with its checksum once the step completed."""

    uuid = models.UUIDField(default=uuid_lib.uuid4, unique=True, editable=False)
    step = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="outputs")
    name = models.CharField(max_length=100)
    path = models.CharField(max_length=1000)
    sha256 = models.CharField(max_length=64, blank=True, help_text="sha256 of the folder's sha256sum manifest.")
    size = models.BigIntegerField(null=True, blank=True)
    file_count = models.PositiveIntegerField(null=True, blank=True)
    reused_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reused_by")
    recorded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["step", "name"]
        constraints = [models.UniqueConstraint(fields=["step", "name"], name="stepoutput_unique_name")]

    def __str__(self) -> str:
        return f"{self.step}.{self.name}"
