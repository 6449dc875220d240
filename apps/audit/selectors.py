from dataclasses import replace
from datetime import datetime

from django.db.models import Q, QuerySet

from apps.core.errors import PermissionDenied

from .chain import GENESIS, Verification, verify
from .checkpoints import CheckpointForged, checkpoint_list
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


_CHAIN_FIELDS = (
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
    "version",
    "key_id",
    "prev_hash",
    "hash",
)


def _chain_events(after_seq: int = 0):
    return AuditEvent.objects.filter(seq__gt=after_seq).order_by("seq").only(*_CHAIN_FIELDS).iterator(chunk_size=2000)


def _checkpoint_hashes() -> tuple[dict[int, str], str]:
    """The hash each signed checkpoint recorded per sequence number, or a problem."""
    try:
        found = checkpoint_list()
    except CheckpointForged as exc:
        return {}, str(exc)
    expected: dict[int, str] = {}
    for cp in found:
        if expected.setdefault(cp.seq, cp.hash) != cp.hash:
            return {}, f"two signed checkpoints disagree about event #{cp.seq}: the history was rewritten in between"
    return expected, ""


def audit_verify() -> Verification:
    """Check every link of the chain with the audit key, the head row, and every signed
    checkpoint in the checkpoint file."""
    head = AuditChainHead.objects.filter(pk=1).first() or AuditChainHead(pk=1)
    expected, problem = _checkpoint_hashes()
    if problem:
        return Verification(False, 0, GENESIS, None, problem)
    result = verify(
        _chain_events(), head.seq, head.hash, expected=expected, legacy_until=max(expected) if expected else None
    )
    return replace(result, checkpoints=len(expected))


def audit_verify_since_last_checkpoint() -> Verification:
    """Check only the events after the newest signed checkpoint (the periodic task's cheap
    check before it signs a new one); ``audit_verify`` checks everything."""
    head = AuditChainHead.objects.filter(pk=1).first() or AuditChainHead(pk=1)
    expected, problem = _checkpoint_hashes()
    if problem:
        return Verification(False, 0, GENESIS, None, problem)
    if not expected:
        return audit_verify()
    last_seq = max(expected)
    anchor = AuditEvent.objects.filter(seq=last_seq).values_list("hash", flat=True).first()
    if anchor != expected[last_seq]:
        return Verification(
            False,
            last_seq - 1,
            GENESIS,
            last_seq,
            f"event #{last_seq} is missing or differs from the signed checkpoint that recorded it",
        )
    return verify(
        _chain_events(last_seq),
        head.seq,
        head.hash,
        start_seq=last_seq,
        start_hash=anchor,
        expected=expected,
        legacy_until=last_seq,
    )
