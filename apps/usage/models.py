"""What Slurm's accounting says each finished job used: one row per allocation (a task of an
array is an allocation of its own), read from sacct/slurmdbd in one call per cluster and
window. Resource-seconds are kept as integers, exactly as Slurm counts them (allocated count
× ElapsedRaw), so the hours shown are sacct's own figures, not estimates."""

from django.conf import settings
from django.db import models


class UsageRecord(models.Model):
    cluster = models.ForeignKey("clusters.Cluster", on_delete=models.CASCADE, related_name="usage_records")
    slurm_job_id = models.CharField(max_length=32, help_text="Slurm's JobIDRaw: an array task has its own.")
    array_job_id = models.CharField(max_length=32, blank=True)
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    team = models.ForeignKey(
        "accounts.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    cluster_username = models.CharField(max_length=64)
    account = models.CharField(max_length=64, blank=True)
    partition = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=32)
    name = models.CharField(max_length=200, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField()
    elapsed_seconds = models.BigIntegerField(default=0)
    cpus = models.PositiveIntegerField(default=0)
    gpus = models.PositiveIntegerField(default=0)
    mem_mb = models.BigIntegerField(default=0)
    cpu_seconds = models.BigIntegerField(default=0)
    gpu_seconds = models.BigIntegerField(default=0)
    mem_mb_seconds = models.BigIntegerField(default=0)
    collected_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["cluster", "slurm_job_id"], name="usage_record_unique_cluster_job")
        ]
        indexes = [
            models.Index(fields=["ended_at"], name="usage_ended"),
            models.Index(fields=["team", "ended_at"], name="usage_team_ended"),
            models.Index(fields=["user", "ended_at"], name="usage_user_ended"),
        ]
        ordering = ["-ended_at"]

    def __str__(self) -> str:
        return f"{self.cluster_id}:{self.slurm_job_id} {self.state}"


class UsageCollection(models.Model):
    """How far a cluster's accounting has been read, and how the last read went."""

    cluster = models.OneToOneField("clusters.Cluster", on_delete=models.CASCADE, related_name="usage_collection")
    collected_until = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_rows = models.PositiveIntegerField(default=0)
    last_calls = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"usage of {self.cluster_id} until {self.collected_until}"
