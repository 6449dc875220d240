from django.conf import settings
from django.db import models

from apps.core.models import BaseModel


class TriggerSettings(models.Model):
    """A pipeline's webhook secret and polling, one row per pipeline (made when first set)."""

    pipeline = models.OneToOneField("pipelines.Pipeline", on_delete=models.CASCADE, related_name="trigger_settings")
    # Fernet-encrypted like every other secret (apps/core/crypto.py); shown once when made.
    webhook_secret_encrypted = models.TextField(blank=True)
    webhook_secret_set_at = models.DateTimeField(null=True, blank=True)
    # A trigger's runs run as the grant of the member who set it up, checked again each time
    # it fires (a grant suspended or expired since refuses the start).
    webhook_set_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    polling_enabled = models.BooleanField(default=False)
    polling_set_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    poll_interval_minutes = models.PositiveIntegerField(default=5)
    poll_next_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    last_seen_commit = models.CharField(
        max_length=64, blank=True, help_text="The branch's head at the last poll; a different one starts a run."
    )
    last_poll_error = models.TextField(blank=True)
    # A new head a poll took and has not finished starting a run for (key, commit, previous):
    # a worker that died meanwhile leaves it here, and the re-drive starts it (once).
    poll_pending = models.JSONField(default=dict, blank=True)
    poll_pending_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "trigger settings"
        verbose_name_plural = "trigger settings"

    def __str__(self) -> str:
        return f"triggers of {self.pipeline}"

    @property
    def has_webhook(self) -> bool:
        return bool(self.webhook_secret_encrypted)


class WebhookDelivery(models.Model):
    """A forge's delivery whose signature checked out. Its id, and the sha256 of its body, are
    each unique per pipeline: a replayed delivery (the forge's redelivery, or someone resending
    a captured request under a new id) finds its row taken and starts nothing."""

    class Outcome(models.TextChoices):
        QUEUED = "queued", "Queued"  # its run is to be started by the worker
        STARTING = "starting", "Starting a run"
        STARTED = "started", "Started a run"
        IGNORED = "ignored", "Ignored"
        FAILED = "failed", "Could not start a run"

    pipeline = models.ForeignKey("pipelines.Pipeline", on_delete=models.CASCADE, related_name="webhook_deliveries")
    forge = models.CharField(max_length=16)
    delivery_id = models.CharField(max_length=100)
    body_sha256 = models.CharField(max_length=64)
    event = models.CharField(max_length=64, blank=True)
    ref = models.CharField(max_length=255, blank=True)
    commit = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    message = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    run = models.ForeignKey(
        "pipelines.PipelineRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="webhook_deliveries"
    )
    received_at = models.DateTimeField(auto_now_add=True)
    claimed_at = models.DateTimeField(null=True, blank=True, help_text="When a worker last took it to start its run.")

    class Meta:
        ordering = ["-received_at"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "delivery_id"], name="webhookdelivery_unique_id"),
            models.UniqueConstraint(fields=["pipeline", "body_sha256"], name="webhookdelivery_unique_body"),
        ]

    def __str__(self) -> str:
        return f"{self.forge} {self.delivery_id}"


class PipelineSchedule(BaseModel):
    """Run the pipeline's branch head when a cron expression says so, on the clocks of a time
    zone. One periodic task fires what is due (apps/pipelines/triggers/cron.py says why not a
    django-q2 cron Schedule per row)."""

    pipeline = models.ForeignKey("pipelines.Pipeline", on_delete=models.CASCADE, related_name="schedules")
    cron = models.CharField(max_length=100, help_text="Five fields: minute hour day-of-month month day-of-week.")
    timezone = models.CharField(max_length=64, default="UTC", help_text="IANA name, e.g. Europe/Berlin.")
    allow_concurrent = models.BooleanField(
        default=False, help_text="Start a run even while a run of the same commit is still active."
    )
    enabled = models.BooleanField(default=True)
    next_fire_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_fired_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.TextField(blank=True)
    last_run = models.ForeignKey(
        "pipelines.PipelineRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # The fire a worker claimed and has not finished starting (key, due_at): see poll_pending.
    pending = models.JSONField(default=dict, blank=True)
    pending_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pipeline", "created_at"]

    def __str__(self) -> str:
        return f"{self.cron} ({self.timezone})"
