"""Slurm's job states, as the hub reads them: which word means waiting, running or which
outcome. squeue and sacct spell the states the same way.

Framework-free: the values are plain strings, which the jobs app's `Job.Status` uses as
its own values."""

from __future__ import annotations

from collections.abc import Iterable

PENDING = "pending"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
TIMEOUT = "timeout"
OUT_OF_MEMORY = "out_of_memory"
NODE_FAIL = "node_fail"

SLURM_STATES: dict[str, str] = {
    "PENDING": PENDING,
    "REQUEUED": PENDING,
    "REQUEUE_HOLD": PENDING,
    "REQUEUE_FED": PENDING,
    "RESV_DEL_HOLD": PENDING,
    "CONFIGURING": RUNNING,
    "RUNNING": RUNNING,
    "COMPLETING": RUNNING,
    "SUSPENDED": RUNNING,
    "STOPPED": RUNNING,
    "SIGNALING": RUNNING,
    "STAGE_OUT": RUNNING,
    "RESIZING": RUNNING,
    "COMPLETED": COMPLETED,
    "FAILED": FAILED,
    "BOOT_FAIL": FAILED,
    "DEADLINE": FAILED,
    "SPECIAL_EXIT": FAILED,
    "PREEMPTED": FAILED,
    "REVOKED": FAILED,
    "CANCELLED": CANCELLED,
    "TIMEOUT": TIMEOUT,
    "OUT_OF_MEMORY": OUT_OF_MEMORY,
    "NODE_FAIL": NODE_FAIL,
}
# When array tasks end differently, the job shows the most telling outcome.
OUTCOME_ORDER = (OUT_OF_MEMORY, NODE_FAIL, TIMEOUT, FAILED, CANCELLED, COMPLETED)


def hub_state(slurm_state: str) -> str | None:
    """The hub's state for one Slurm state word; None for a word Slurm may add later."""
    # sacct writes "CANCELLED by 1000"; squeue may add "+" for more states.
    word = (slurm_state or "").split(" ")[0].rstrip("+").upper()
    return SLURM_STATES.get(word)


def combined_state(slurm_states: Iterable[str]) -> str | None:
    """One state for a job from the states of its rows (an array's tasks): running while
    any runs, pending while any waits, else the most telling outcome."""
    states = {s for s in (hub_state(x) for x in slurm_states) if s}
    if not states:
        return None
    if RUNNING in states:
        return RUNNING
    if PENDING in states:
        return PENDING
    return next(s for s in OUTCOME_ORDER if s in states)
