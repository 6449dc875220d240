"""The MLflow contract: errors and the data the hub exchanges with a tracking server.

Framework-free on purpose: services import this, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit


class MlflowError(Exception):
    """Anything that went wrong talking to MLflow.

    `permanent` tells the caller whether retrying the same call later could help: a
    server that is down is transient, a run that does not exist is not.
    """

    def __init__(self, message: str, permanent: bool = False, code: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code  # MLflow's error_code (RESOURCE_DOES_NOT_EXIST, ...) when it sent one
        self.status = status  # the HTTP status of a refusal, when there was an answer

    def __str__(self) -> str:
        return self.message


class MlflowUnavailable(MlflowError):
    """The server could not be reached, timed out, or answered 5xx: try again later."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=False)


class RunStatus:
    RUNNING = "RUNNING"
    SCHEDULED = "SCHEDULED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"
    TERMINAL = frozenset({FINISHED, FAILED, KILLED})


@dataclass(frozen=True)
class MetricPoint:
    key: str
    value: float
    timestamp_ms: int
    step: int = 0


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    status: str
    start_time: int | None  # ms since the epoch, as MLflow keeps it
    end_time: int | None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, MetricPoint] = field(default_factory=dict)  # the latest point of each
    artifact_uri: str = ""
    run_name: str = ""
    model_ids: tuple[str, ...] = ()  # MLflow 3 LoggedModels this run produced
    user_id: str = ""  # what the client that made the run said (its `mlflow.user` tag): not checked by MLflow


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: str
    source: str
    run_id: str
    status: str


@dataclass(frozen=True)
class ArtifactEntry:
    path: str  # relative to the run's artifact root
    is_dir: bool
    size: int | None


def redact_uri(uri: str) -> str:
    """The URI without userinfo, query or fragment: a tracking URI may carry a token
    (https://user:token@host) and error messages end up in logs and on pages."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable uri>"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
