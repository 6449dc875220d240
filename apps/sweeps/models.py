from django.conf import settings
from django.db import models

from apps.clusters.models import Cluster, ClusterGrant
from apps.core.models import BaseModel
from apps.jobs.models import Job


class Sweep(BaseModel):
    """A Katib Experiment run on Slurm: its trials are the tasks of one job array (grid,
    random, sobol) or of a few waves of arrays (adaptive algorithms), searched by Optuna.

    The hub's rows are the truth: the spec as given, every trial with its parameters, values
    and state. The Optuna study is rebuilt from them (apps/sweeps/search.py says why)."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        STOPPED = "stopped", "Stopped"

    TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.STOPPED})
    TRANSITIONS = {
        Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.STOPPED}),
        # Extending a sweep that ended runs it again for more trials.
        Status.SUCCEEDED: frozenset({Status.RUNNING}),
        Status.STOPPED: frozenset({Status.RUNNING}),
        Status.FAILED: frozenset({Status.RUNNING}),
    }

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="sweeps")
    team = models.ForeignKey("accounts.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="sweeps")
    grant = models.ForeignKey(ClusterGrant, on_delete=models.PROTECT, related_name="sweeps")
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="sweeps")
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING, db_index=True)
    spec_text = models.TextField(help_text="The Katib Experiment as given.")
    script = models.TextField(help_text="The trial's sbatch script (trialSpec).")
    algorithm = models.CharField(max_length=32)
    max_trial_count = models.PositiveIntegerField(help_text="Katib's maxTrialCount, raised by extending the sweep.")
    folder = models.CharField(max_length=1000, help_text="The sweep's folder on the cluster.")
    waves = models.PositiveIntegerField(default=0, help_text="Job arrays launched so far; a launch claims the next.")
    optuna_attrs = models.JSONField(default=dict, blank=True, help_text="What the sampler keeps on the study.")
    mlflow_experiment_id = models.CharField(max_length=64, blank=True)
    mlflow_run_id = models.CharField(max_length=64, blank=True, help_text="The parent run of the trials' runs.")
    best_value = models.FloatField(null=True, blank=True)
    message = models.TextField(blank=True, help_text="Why the sweep ended, or what it waits for.")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL


class Trial(models.Model):
    """One set of parameters: one task of one of the sweep's array jobs."""

    class State(models.TextChoices):
        CREATED = "created", "Created"  # asked, not yet in a job array
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        ENDING = "ending", "Ended, objective being read"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        EARLY_STOPPED = "early_stopped", "Early stopped"
        CANCELLED = "cancelled", "Cancelled"

    ENDED = frozenset({State.SUCCEEDED, State.FAILED, State.EARLY_STOPPED, State.CANCELLED})
    ACTIVE = frozenset({State.CREATED, State.PENDING, State.RUNNING, State.ENDING})

    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, related_name="trials")
    number = models.PositiveIntegerField()
    params = models.JSONField(help_text="The parameter values, by Katib parameter name.")
    values = models.JSONField(help_text="Each trial parameter as put in the script, by trialParameters name.")
    system_attrs = models.JSONField(default=dict, blank=True, help_text="The sampler's own notes on this trial.")
    state = models.CharField(max_length=16, choices=State.choices, default=State.CREATED, db_index=True)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.PROTECT, related_name="trials")
    task_id = models.PositiveIntegerField(null=True, blank=True, help_text="Its index in the job array.")
    objective = models.FloatField(null=True, blank=True)
    intermediate = models.JSONField(default=dict, blank=True, help_text="Objective per step: {step: value}.")
    metrics = models.JSONField(default=dict, blank=True, help_text="Last value of each metric it reported.")
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    stop_reason = models.JSONField(default=dict, blank=True, help_text="Why the hub stopped it, with the numbers.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sweep", "number"]
        constraints = [models.UniqueConstraint(fields=["sweep", "number"], name="trial_unique_number")]

    def __str__(self) -> str:
        return f"{self.sweep_id}#{self.number}"

    @property
    def best_step(self) -> int | None:
        """The step at which it reported its objective (its best value)."""
        if self.objective is None:
            return None
        steps = [int(k) for k, v in (self.intermediate or {}).items() if v == self.objective]
        return min(steps) if steps else None

    @property
    def duration_seconds(self) -> int | None:
        if self.started_at and self.finished_at:
            return int((self.finished_at - self.started_at).total_seconds())
        return None

    @property
    def slurm_task(self) -> str:
        if self.job_id and self.job.slurm_job_id and self.task_id is not None:
            return f"{self.job.slurm_job_id}_{self.task_id}"
        return ""
