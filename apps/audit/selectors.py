from datetime import datetime

from django.db.models import Q, QuerySet

from apps.core.errors import PermissionDenied

from .chain import Verification, verify
from .models import AuditChainHead, AuditEvent


def user_can_read_audit(user) -> bool:
    return bool(user.is_authenticated and (user.is_staff or user.is_superuser))


def audit_event_list(
    *,
    user,
    actor: str = "",
    action: str = "",
    subject: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEvent]:
    if not user_can_read_audit(user):
        raise PermissionDenied("Only administrators can read the audit trail.")
    qs = AuditEvent.objects.all().order_by("-seq")
    if actor:
        qs = qs.filter(actor_username=actor) if actor != "system" else qs.filter(actor_username="")
    if action:
        # "job." finds every job event; "job.submitted" finds just that one.
        qs = qs.filter(action__startswith=action)
    if subject:
        # One box finds a subject by its type ("accounts.apitoken"), its public id, or its name.
        qs = qs.filter(Q(subject_type=subject) | Q(subject_id=subject) | Q(subject_text__icontains=subject))
    if since:
        qs = qs.filter(created_at__gte=since)
    if until:
        qs = qs.filter(created_at__lt=until)
    return qs


def audit_verify() -> Verification:
    head = AuditChainHead.objects.filter(pk=1).first() or AuditChainHead(pk=1)
    events = (
        AuditEvent.objects.order_by("seq")
        .only(
            "seq",
            "uuid",
            "created_at",
            "actor_id",
            "actor_username",
            "action",
            "subject_type",
            "subject_id",
            "subject_text",
            "request_id",
            "before",
            "after",
            "prev_hash",
            "hash",
        )
        .iterator(chunk_size=2000)
    )
    return verify(events, head.seq, head.hash)
