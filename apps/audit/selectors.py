from dataclasses import dataclass, replace
from datetime import datetime

from django.db.models import Q, QuerySet

from apps.core.errors import PermissionDenied

from .chain import GENESIS, Verification, verify
from .checkpoints import CheckpointForged, checkpoint_lines, checkpoint_parse, checkpoint_path
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


MISSING_FILE = (
    "checkpoint file missing: cannot prove the tail (keyed events exist but {path} is missing or empty; "
    "it is append-only and must never be removed)"
)


@dataclass(frozen=True)
class _Proof:
    """What the signed records outside the chain say: hashes per sequence number from the
    checkpoints, and up to which event the chain may be unkeyed (the legacy boundary)."""

    expected: dict[int, str]
    legacy_until: int
    problem: str = ""
    checkpoints: int = 0


def _proof() -> _Proof:
    try:
        lines = checkpoint_lines()
    except CheckpointForged as exc:
        return _Proof({}, 0, str(exc))
    head = AuditChainHead.objects.filter(pk=1).values_list("legacy_boundary", flat=True).first() or ""
    boundaries = [cp for cp in lines or [] if cp.legacy]
    if head:
        try:
            boundaries.append(checkpoint_parse(head))
        except CheckpointForged:
            return _Proof(
                {}, 0, "the legacy boundary in the audit head row does not match its signature: it was forged"
            )
    if not lines and AuditEvent.objects.filter(version__gte=2).exists():
        return _Proof({}, 0, MISSING_FILE.format(path=checkpoint_path()))
    if len({(b.seq, b.hash) for b in boundaries}) > 1:
        return _Proof({}, 0, "two signed legacy boundaries disagree: the history was rewritten in between")
    expected: dict[int, str] = {}
    signed = [cp for cp in lines or [] if not cp.legacy]
    for cp in signed + boundaries[:1]:
        if cp.seq and expected.setdefault(cp.seq, cp.hash) != cp.hash:
            return _Proof(
                {}, 0, f"two signed checkpoints disagree about event #{cp.seq}: the history was rewritten in between"
            )
    # No boundary: no unkeyed event was ever legitimate (new trails are keyed from event #1).
    return _Proof(expected, boundaries[0].seq if boundaries else 0, checkpoints=len({cp.seq for cp in signed}))


def audit_verify() -> Verification:
    """Check every link of the chain with the audit key, the head row, the legacy boundary,
    and every signed checkpoint in the checkpoint file."""
    head = AuditChainHead.objects.filter(pk=1).first() or AuditChainHead(pk=1)
    proof = _proof()
    if proof.problem:
        return Verification(False, 0, GENESIS, None, proof.problem)
    result = verify(_chain_events(), head.seq, head.hash, expected=proof.expected, legacy_until=proof.legacy_until)
    return replace(result, checkpoints=proof.checkpoints)


def audit_verify_since_last_checkpoint() -> Verification:
    """Check only the events after the newest signed checkpoint (the periodic task's cheap
    check before it signs a new one); ``audit_verify`` checks everything."""
    head = AuditChainHead.objects.filter(pk=1).first() or AuditChainHead(pk=1)
    proof = _proof()
    if proof.problem:
        return Verification(False, 0, GENESIS, None, proof.problem)
    expected = proof.expected
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
        legacy_until=proof.legacy_until,
    )
