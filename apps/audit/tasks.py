"""Periodic work of the audit app."""

import logging

from .selectors import audit_verify_since_last_checkpoint
from .services import audit_checkpoint_write

log = logging.getLogger(__name__)


def audit_checkpoint() -> str:
    """Check the events since the newest signed checkpoint and sign a new one at the end.

    A broken chain gets no checkpoint (that would bless it); it is logged as an error, and
    ``manage.py audit_verify`` names the bad event."""
    result = audit_verify_since_last_checkpoint()
    if not result.ok:
        log.error("Audit chain BROKEN, no checkpoint written: %s (event #%s)", result.problem, result.bad_seq)
        return "broken"
    audit_checkpoint_write(verification=result)
    return f"checkpoint #{result.count}"
