import uuid

from django.conf import settings
from django.db import models

from .diff import change_rows


class AuditEvent(models.Model):
    """One append-only, chained record of a change of state.

    ``hash = HMAC-SHA256(audit key, prev_hash + canonical(event))`` (version 2; version 1 is
    the plain sha256 of trails begun before the chain was keyed); see apps.audit.chain. On
    PostgreSQL a trigger refuses UPDATE, DELETE and TRUNCATE on this table, and the hub's own
    database role may only SELECT and INSERT it."""

    seq = models.PositiveBigIntegerField(unique=True)
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    created_at = models.DateTimeField(db_index=True)
    # No database-level foreign key: deleting a user must never need to touch the trail.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=100, db_index=True)
    subject_type = models.CharField(max_length=100, blank=True, db_index=True)
    subject_id = models.CharField(max_length=64, blank=True, db_index=True)
    subject_text = models.CharField(max_length=255, blank=True)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    # Which canonical form and link (apps.audit.chain) and which audit key signed it.
    version = models.PositiveSmallIntegerField()
    key_id = models.CharField(max_length=16, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-seq"]

    def change_rows(self):
        """before → after, one row per field (apps.audit.diff)."""
        return change_rows(self.before, self.after)

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.subject_text}".strip()

    @property
    def actor_display(self) -> str:
        return self.actor_username or "system"


class AuditChainHead(models.Model):
    """The single row that says where the chain ends. Locking it serializes appends, and it
    lets verification notice events cut off the end of the chain. It is not trusted alone:
    signed checkpoints outside the database record where the chain was, and on PostgreSQL a
    trigger lets it move only forward, onto the last event."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64, default="0" * 64)
    # The signed legacy boundary (a checkpoint-file line, apps.audit.checkpoints): up to which
    # event the chain may be unkeyed. Also in the checkpoint file; empty until the first keyed event.
    legacy_boundary = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return f"audit head #{self.seq}"
