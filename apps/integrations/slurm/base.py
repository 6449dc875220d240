"""The Slurm client contract: errors, the data the hub exchanges with a cluster, and the
`SlurmClient` protocol that each transport (SSH, slurmrestd) implements.

Framework-free on purpose: services import this, never the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable


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


class RemoteFileMissing(SlurmError):
    """A file asked for by `read_file` does not exist (yet): a pending job has no log."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=False)


class UnsupportedOperation(SlurmError):
    """The transport cannot do this at all (e.g. slurmrestd has no file API)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


@dataclass(frozen=True)
class SubmitRequest:
    """One sbatch submission.

    `extra_args` are the hub's own sbatch options (e.g. ``["--output=/x/%j.out",
    "--hold"]``); like sbatch's command line they override the script's directives.
    `comment` is the hub's unique marker used to find the job again after a crash.
    """

    script: str
    job_name: str
    comment: str
    workdir: str
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)


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
    num_nodes: int | None = None
    work_dir: str = ""

    @property
    def is_array_task(self) -> bool:
        return self.array_job_id is not None


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


@runtime_checkable
class FileReader(Protocol):
    def read_file(self, path: str, offset: int = 0, limit: int = 1 << 20) -> tuple[bytes, int]:
        """Read at most `limit` bytes of `path` starting at byte `offset`; return the bytes
        and the offset to ask for next. Never re-reads what came before `offset`."""
        ...


@runtime_checkable
class SlurmClient(FileReader, Protocol):
    """One cluster, seen as one cluster user. Every method is one Slurm call whatever the
    number of jobs involved, so a tracking cycle costs a constant number of calls."""

    def submit(self, req: SubmitRequest) -> str:
        """Submit and return the job id (for an array, the array's job id)."""
        ...

    def queue(self, user: str) -> list[JobInfo]:
        """All of `user`'s jobs Slurm's controller still holds, array tasks one per row."""
        ...

    def accounting(self, job_ids: list[str]) -> list[JobInfo]:
        """Accounting for the given jobs (an array's id brings all its tasks)."""
        ...

    def find_by_comment(self, marker: str) -> list[JobInfo]:
        """Jobs whose comment equals `marker`: how a lost submission is found again."""
        ...

    def find_by_comments(self, markers: Sequence[str]) -> dict[str, list[JobInfo]]:
        """`find_by_comment` for many markers in one Slurm call (one more at most)."""
        ...

    def cancel(self, job_id: str) -> None: ...

    def cluster_state(self) -> ClusterState: ...

    def ping(self) -> None:
        """Return if the controller answers; raise TransportError otherwise."""
        ...

    def close(self) -> None: ...
