"""The contract every serving backend implements (local MLflow model server, KServe).

Framework-free. The serving app's services hold the desired state in the database and call
a backend outside any transaction; every call is idempotent so a task can run twice and a
restarted worker can reconcile what should run with what does."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class ServingError(Exception):
    """A backend call failed. `permanent` says whether retrying could help."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Resources:
    cpu: str = "1"  # Kubernetes quantities: "500m", "2"
    memory: str = "1Gi"
    gpus: int = 0


@dataclass(frozen=True)
class DeploymentSpec:
    """What should be served. `name` is stable for a deployment (DNS-1035 label, at most 63
    characters) and is how the backend finds it again after a restart.

    `owner` says whom the server under `name` belongs to (the deployment's public id for a
    local server; the environment and model for an InferenceService, whose successive
    versions and canaries share one object). A backend refuses to replace or take over a
    server recorded with another owner, so a name collision can never swap one deployment's
    model for another's."""

    name: str
    namespace: str
    model_name: str
    model_version: str
    # For the local backend: an MLflow model URI the hub's tracking server resolves
    # (models:/<name>/<version>, runs:/…). For KServe: the artifact's storage URI (s3://,
    # gs://, pvc://…) the cluster can fetch.
    model_uri: str
    artifact_sha256: str
    resources: Resources = field(default_factory=Resources)
    # KServe canary: the share of traffic the new revision gets while the previous one keeps
    # the rest; None means all traffic.
    canary_percent: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    owner: str = ""
    # For the local backend: a directory on the hub holding the artifact, already fetched
    # from MLflow and checked against `artifact_sha256`; the server gets a copy of it.
    model_path: str = ""


@dataclass(frozen=True)
class BackendStatus:
    exists: bool
    ready: bool
    url: str = ""
    message: str = ""
    # Set by `apply` when it started a server or changed what is served (not when what it
    # asked for was already there): what the reconciler audits as a start.
    changed: bool = False


@runtime_checkable
class ServingBackend(Protocol):
    def apply(self, spec: DeploymentSpec) -> BackendStatus:
        """Create or update what serves `spec`; return at once (use `status` to follow)."""
        ...

    def status(self, name: str, namespace: str) -> BackendStatus: ...

    def delete(self, name: str, namespace: str) -> None:
        """Stop serving; deleting what does not exist is not an error."""
        ...

    def list_names(self, namespace: str) -> list[str]:
        """Names of everything this backend runs for Axle in `namespace` (for reconciling)."""
        ...

    def predict(self, name: str, namespace: str, payload: dict) -> dict:
        """Forward an inference request (MLflow scoring / Open Inference Protocol JSON)."""
        ...
