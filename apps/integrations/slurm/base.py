"""The Slurm client contract: errors, the data the hub exchanges with a cluster, and the
`SlurmClient` protocol that each transport (SSH, slurmrestd) implements.

Framework-free on purpose: services import this, never the other way round.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .sbatch import Directive

if TYPE_CHECKING:
    from .parsing import SqueueMemo

# A caller that must answer soon (a web request submitting a sweep's wave) bounds every call
# to the cluster under it; the transports cut their own timeouts to the time left.
_deadline: ContextVar[float | None] = ContextVar("slurm_deadline", default=None)


@contextmanager
def deadline_at(at: float | None) -> Iterator[None]:
    """Calls to the cluster inside end by `at` (time.monotonic()), or by an earlier deadline
    already set; None sets none. Threads a transport starts pass it on with this."""
    current = _deadline.get()
    if current is not None and (at is None or current < at):
        at = current
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


def deadline(seconds: float) -> AbstractContextManager[None]:
    """Calls to the cluster inside end within `seconds` from now."""
    return deadline_at(time.monotonic() + seconds)


def current_deadline() -> float | None:
    return _deadline.get()


def bounded(timeout: float) -> float:
    """`timeout`, cut to the time left before the caller's deadline (at least a tenth of a
    second, so a call past it fails fast as a timeout rather than with a bad argument)."""
    at = _deadline.get()
    if at is None:
        return timeout
    return max(0.1, min(timeout, at - time.monotonic()))


class SlurmError(Exception):
    """Anything that went wrong talking to Slurm.

    `permanent` tells the caller whether retrying the same call later could help: a
    cluster that is down is transient, a rejected script is not.
    """

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent

    def __str__(self) -> str:
        return self.message


class TransportError(SlurmError):
    """The cluster could not be reached or refused us (network, auth, host key)."""


class HostKeyError(TransportError):
    """The login host presented a key other than the pinned one: never retried, since
    a changed key needs an administrator to look before anything is sent to it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


class AmbiguousSubmitError(SlurmError):
    """The connection broke after sbatch was started and before it answered: the job may
    or may not exist. Resubmitting could start it twice, so the caller must reconcile
    by the submission's marker instead."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=False)


class SlurmRejected(SlurmError):
    """Slurm itself refused the request; `message` is Slurm's own text, verbatim."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


# What sbatch (or slurmrestd) says when slurmctld is down or overloaded: an outage, not a
# refusal, so the job waits and is sent again rather than failing. The first never reached
# the controller; the second may have reached it and been lost on the way back.
_CONTROLLER_UNREACHED = (
    "unable to contact slurm controller",
    "slurm temporarily unable to accept job",
    "connection refused",
    "slurmctld is not responding",
)
_CONTROLLER_AMBIGUOUS = ("socket timed out", "zero bytes were transmitted", "connection reset")


def submit_refusal(message: str) -> SlurmError:
    """The error a failed sbatch means: a refusal by Slurm (the job fails with Slurm's words),
    or an outage of the controller (the job waits; found by marker if it may have reached it)."""
    text = message.lower()
    if any(s in text for s in _CONTROLLER_AMBIGUOUS):
        return AmbiguousSubmitError(f"Slurm's controller did not answer the submission in time: {message}")
    if any(s in text for s in _CONTROLLER_UNREACHED):
        return TransportError(f"Slurm's controller is not reachable: {message}", permanent=False)
    return SlurmRejected(message)


class RemoteFileMissing(SlurmError):
    """A file asked for does not exist (yet) or cannot be read: a pending job has no log."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=False)


class UnsupportedOperation(SlurmError):
    """The transport cannot do this at all (e.g. slurmrestd has no file API)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


class RemoteCommandFailed(SlurmError):
    """A file operation ran on the cluster and failed there (permissions, a full disk):
    retrying the same call would fail the same way. `detail` is what the cluster said."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message, permanent=True)
        self.detail = detail or message


@dataclass(frozen=True)
class SubmitRequest:
    """One sbatch submission.

    `extra_args` are the hub's own sbatch options (e.g. ``["--output=/x/%j.out",
    "--hold"]``); like sbatch's command line they override the script's directives.
    `comment` is the hub's unique marker used to find the job again after a crash.
    `script_directives` are the script's own directives as validation parsed them; a
    client that must translate them (slurmrestd) uses them instead of reading the script
    again. None means "not parsed yet": the client parses the script itself.
    """

    script: str
    job_name: str
    comment: str
    workdir: str
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    script_directives: tuple[Directive, ...] | None = None


@dataclass
class JobInfo:
    """What Slurm knows about one job or one array task.

    For an array task `job_id` is the task's own id and `array_job_id` the id of the
    whole array; for a plain job `array_job_id` is None. Tasks that have not started
    have no id of their own yet: accounting (sacct, slurmdbd) and slurmrestd's queue
    give them as one row whose `array_task_id` is the remaining range (e.g.
    ``"3-9%2"``), so it stays a string; squeue gives one row per task, each with the
    array's id as `job_id`.
    """

    job_id: str
    name: str = ""
    state: str = ""
    array_job_id: str | None = None
    array_task_id: str | None = None
    comment: str = ""
    user: str = ""
    account: str = ""
    partition: str = ""
    reason: str = ""
    submit_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    node_list: str = ""
    elapsed_seconds: int | None = None
    time_limit_minutes: int | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    cpu_time_seconds: float | None = None
    max_rss_bytes: int | None = None
    alloc_cpus: int | None = None
    alloc_gpus: int | None = None
    alloc_mem_mb: int | None = None
    num_nodes: int | None = None
    work_dir: str = ""

    @property
    def is_array_task(self) -> bool:
        return self.array_job_id is not None


@dataclass(frozen=True)
class UsageWindow:
    """A stretch of accounting, as seconds before the cluster's own "now" (Slurm reads
    absolute times in the cluster's local zone; a relative window needs no zone at all)."""

    start_seconds_ago: int
    end_seconds_ago: int = 0
    users: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.start_seconds_ago <= self.end_seconds_ago or self.end_seconds_ago < 0:
            raise ValueError("a usage window starts before it ends, and not in the future")


@dataclass
class NodeInfo:
    name: str
    state: str
    cpus: int
    memory_mb: int
    gpus: int = 0
    gres: str = ""
    partitions: list[str] = field(default_factory=list)
    cpus_allocated: int | None = None
    free_memory_mb: int | None = None
    reason: str = ""


@dataclass
class PartitionInfo:
    name: str
    state: str = "UP"
    is_default: bool = False
    time_limit_minutes: int | None = None  # None: unlimited
    nodes: list[str] = field(default_factory=list)
    total_cpus: int = 0
    total_memory_mb: int = 0
    total_gpus: int = 0
    # What Slurm gives a job that does not say (read from the cluster's configuration,
    # cluster-wide values filled in where the partition sets none).
    default_time_minutes: int | None = None  # DefaultTime; None: NONE (MaxTime applies)
    oversubscribe: str = "NO"  # NO, YES:n, FORCE:n or EXCLUSIVE (whole nodes for every job)
    node_cpus: int = 0  # CPUs of its largest node: what --exclusive allocates per node
    node_memory_mb: int = 0  # memory of its largest node
    def_mem_per_cpu_mb: int | None = None
    def_mem_per_node_mb: int | None = None
    max_mem_per_cpu_mb: int | None = None
    max_mem_per_node_mb: int | None = None
    memory_defaults_known: bool = False  # False: Slurm's default memory here is not known


@dataclass
class ClusterState:
    partitions: list[PartitionInfo] = field(default_factory=list)
    nodes: list[NodeInfo] = field(default_factory=list)

    def partition(self, name: str) -> PartitionInfo | None:
        return next((p for p in self.partitions if p.name == name), None)

    @property
    def default_partition(self) -> str | None:
        return next((p.name for p in self.partitions if p.is_default), None)


@dataclass(frozen=True)
class StartEstimate:
    """Slurm's own answer to "when would this start?" (`sbatch --test-only`), nothing submitted."""

    start: datetime | None
    processors: int | None = None
    nodes: str = ""
    partition: str = ""
    message: str = ""  # what sbatch said, as it said it


@dataclass(frozen=True)
class FairShare:
    """One association of the user, as `sshare` reports it."""

    account: str
    user: str
    raw_shares: str
    norm_shares: float | None
    raw_usage: int | None
    effective_usage: float | None
    fairshare: float | None


class CommandOutput(Protocol):
    """What a command run on the cluster answered."""

    exit_status: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str: ...

    @property
    def err(self) -> str: ...


@dataclass(frozen=True)
class FileEntry:
    """A regular file below a listed folder: its path relative to that folder, and its size.

    Names are decoded as UTF-8 with ``surrogateescape``, so ``name.encode("utf-8",
    "surrogateescape")`` gives back the exact bytes of any name."""

    name: str
    size: int


@dataclass(frozen=True)
class FileStat:
    kind: str  # "file", "dir" or "other" (links are followed)
    size: int
    mtime: datetime


@runtime_checkable
class ClusterFiles(Protocol):
    """The cluster's file system, as the grant's cluster user sees it on the login host.

    Every call is one round trip; nothing is ever downloaded to compute something that the
    cluster can compute itself (a checksum). Paths are passed as arguments, never as shell
    text. A transport that cannot reach files raises `UnsupportedOperation` from every
    method, with a sentence saying what is missing."""

    def run(self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float | None = None) -> CommandOutput:
        """Run one command (argv, every word quoted) as the cluster user; a non-zero exit is
        returned, not raised."""
        ...

    def read(self, path: str, offset: int = 0, limit: int = 1 << 20) -> tuple[bytes, int]:
        """Read at most `limit` bytes of `path` starting at byte `offset`; return the bytes
        and the offset to ask for next. Never re-reads what came before `offset`. Raises
        `RemoteFileMissing` when the file is not there (yet) or not readable."""
        ...

    def write(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        """Replace `path` with `data` atomically (a temporary file in the same folder, then a
        rename), creating its folder if needed; a reader never sees half a file."""
        ...

    def mkdir(self, path: str) -> None:
        """Create `path` and its parents; nothing happens when it exists."""
        ...

    def stat(self, path: str) -> FileStat:
        """Kind, size and modification time of `path`; `RemoteFileMissing` if it is not there."""
        ...

    def sha256(self, path: str, *, timeout: float | None = None) -> str:
        """The hex sha256 of a file, computed on the cluster while it streams through
        `sha256sum`. `RemoteFileMissing` if it is not there or not readable."""
        ...

    def sha256_many(self, folder: str, names: Sequence[str], *, timeout: float | None = None) -> builtins.list[bytes]:
        """Hash many files below `folder` in one round trip: `sha256sum`'s line for each of
        `names` (relative to `folder`), in that order, byte for byte (``<hex>  <name>``, a
        name with a newline or backslash escaped as sha256sum does), so the lines are a
        manifest anyone can reproduce by hand. `RemoteFileMissing` if the folder is not there
        or not readable; `RemoteCommandFailed` if a file cannot be read."""
        ...

    def list(self, path: str) -> builtins.list[FileEntry]:
        """Every regular file below the folder `path` (recursively, links not followed), sorted
        by name bytes. `RemoteFileMissing` if the folder is not there or not readable;
        `RemoteCommandFailed` if part of it cannot be read."""
        ...


class NoClusterFiles:
    """`ClusterFiles` for a transport that has no way to the cluster's files: every method
    raises `UnsupportedOperation` saying what could not be done and what would fix it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return "NoClusterFiles()"

    def _refuse(self, what: str) -> UnsupportedOperation:
        return UnsupportedOperation(f"{self.reason} cannot {what}: {_NO_FILES_FIX}")

    def run(self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float | None = None) -> CommandOutput:
        raise self._refuse("run a command on the cluster")

    def read(self, path: str, offset: int = 0, limit: int = 1 << 20) -> tuple[bytes, int]:
        raise self._refuse(f"read {path}")

    def write(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        raise self._refuse(f"write {path}")

    def mkdir(self, path: str) -> None:
        raise self._refuse(f"create the folder {path}")

    def stat(self, path: str) -> FileStat:
        raise self._refuse(f"look at {path}")

    def sha256(self, path: str, *, timeout: float | None = None) -> str:
        raise self._refuse(f"checksum {path}")

    def sha256_many(self, folder: str, names: Sequence[str], *, timeout: float | None = None) -> builtins.list[bytes]:
        raise self._refuse(f"checksum the files in {folder}")

    def list(self, path: str) -> builtins.list[FileEntry]:
        raise self._refuse(f"list {path}")

    def close(self) -> None:
        pass


_NO_FILES_FIX = (
    "slurmrestd has no file API, so files on the cluster are reached over SSH on its login node. "
    "An administrator must add an SSH key to the grant (and a login host with a confirmed host key "
    "to the cluster)."
)


@runtime_checkable
class SlurmClient(Protocol):
    """One cluster, seen as one cluster user. Every method is one Slurm call whatever the
    number of jobs involved, so a tracking cycle costs a constant number of calls.

    `files` is the cluster's file system as the same user (`ClusterFiles`)."""

    @property
    def files(self) -> ClusterFiles: ...

    def submit(self, req: SubmitRequest) -> str:
        """Submit and return the job id (for an array, the array's job id)."""
        ...

    def submit_many(self, reqs: Sequence[SubmitRequest]) -> dict[str, str | SlurmError]:
        """Submit many jobs in one round trip (SSH: one command; REST: concurrent requests)
        and answer, for each request's `comment` (its marker), the job id or the error that
        `submit` would have raised for it alone: `SlurmRejected` with Slurm's words when
        Slurm refused that one job, `AmbiguousSubmitError` when it may or may not exist, any
        other `SlurmError` when it certainly was not submitted. Markers must be unique."""
        ...

    def queue(self, user: str, *, memo: SqueueMemo | None = None) -> list[JobInfo]:
        """All of `user`'s jobs Slurm's controller still holds, array tasks one per row.
        `memo`, kept by the caller from one call to the next for the same user, lets the SSH
        transport skip parsing the rows unchanged since the last call (the JobInfo objects
        are then shared: do not change them); the REST transport does not use it."""
        ...

    def accounting(self, job_ids: list[str]) -> list[JobInfo]:
        """Accounting for the given jobs (an array's id brings all its tasks)."""
        ...

    def find_by_comment(self, marker: str) -> list[JobInfo]:
        """Jobs whose comment equals `marker`: how a lost submission is found again."""
        ...

    def usage(self, window: UsageWindow) -> list[JobInfo]:
        """Accounting rows (allocations, not steps) of the jobs that ran in `window`: one
        call however many jobs. Only this account's jobs unless the window names users or
        accounts, which needs a Slurm operator where PrivateData hides other users' jobs."""
        ...

    def find_by_comments(self, markers: Sequence[str]) -> dict[str, list[JobInfo]]:
        """`find_by_comment` for many markers in one Slurm call (one more at most)."""
        ...

    def cancel(self, job_id: str) -> None: ...

    def test_only(self, req: SubmitRequest) -> StartEstimate:
        """Slurm's start estimate for `req` without submitting it (`sbatch --test-only`);
        SlurmRejected with sbatch's words when Slurm would refuse it, UnsupportedOperation
        where the transport has no such question."""
        ...

    def fairshare(self) -> list[FairShare]:
        """The user's own associations and their fair-share factor (`sshare`)."""
        ...

    def cancel_many(self, job_ids: Sequence[str]) -> None:
        """`cancel` for many jobs of one account in one Slurm call where the transport has one."""
        ...

    def cluster_state(self) -> ClusterState: ...

    def ping(self) -> None:
        """Return if the controller answers; raise TransportError otherwise."""
        ...

    def close(self) -> None: ...
