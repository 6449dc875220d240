"""Is a model version's artifact in MLflow still the one that was registered and approved?

The registry pins every version by `directory_sha256` of its artifact directory (computed at
registration by `TrackingClient.model_sha256`). Whoever serves a version asks here, and gets
the same hash function over the same files: `model_version_artifact_check` for a backend that
fetches the artifact itself (KServe), `model_version_artifact_fetch` for one the hub hands
a checked copy to (the local model server, which then needs no MLflow credentials).
MLflow is called with no database transaction open."""

from __future__ import annotations

from pathlib import Path

from django.core.cache import cache

from apps.core.errors import Unavailable, ValidationFailed
from apps.integrations.mlflow.base import MlflowError
from apps.integrations.mlflow.client import directory_sha256
from apps.jobs import tracking

from .models import ModelVersion


class ArtifactChanged(ValidationFailed):
    """The artifact is not the pinned one any more (changed, or gone). Retrying cannot help."""


def _unreadable(exc: MlflowError) -> Exception:
    if exc.permanent:
        return ArtifactChanged(f"The model's artifact cannot be read any more ({exc}).")
    return Unavailable(f"MLflow could not be reached to check the artifact: {exc}")


def _compare(actual: str, expected: str) -> None:
    if actual != expected:
        raise ArtifactChanged(
            f"The model's artifact changed since it was pinned (pinned {expected[:12]}…, now {actual[:12]}…)."
        )


def model_version_artifact_check(*, version: ModelVersion, expected_sha256: str) -> None:
    """Raise ArtifactChanged unless the artifact hashes to `expected_sha256` now;
    Unavailable when MLflow cannot be asked."""
    try:
        actual = tracking.client().model_sha256(version.source_uri)
    except MlflowError as exc:
        raise _unreadable(exc) from None
    _compare(actual, expected_sha256)


def model_version_artifact_fetch(*, version: ModelVersion, expected_sha256: str, dest: Path) -> Path:
    """Download the artifact into the empty folder `dest` and return the model's folder,
    only if it hashes to `expected_sha256` (else ArtifactChanged; Unavailable when MLflow
    cannot be asked)."""
    try:
        local = Path(tracking.client().download_artifact(version.source_uri, "", Path(dest) / "model"))
    except MlflowError as exc:
        raise _unreadable(exc) from None
    _compare(directory_sha256(local), expected_sha256)
    return local


def model_version_input_example(*, version: ModelVersion) -> dict | None:
    """The request body the model's own input example makes (MLflow's `input_example`, or
    zeros shaped by its signature), None when the model was logged with neither.

    Read from the model's MLmodel file in MLflow; a version never changes, so the answer is
    kept by its sha256. Unavailable when MLflow cannot be asked (never cached)."""
    key = f"axle:model-example:{version.sha256 or version.source_uri}"
    cached = cache.get(key, _MISSING)
    if cached is not _MISSING:
        return cached
    try:
        example = tracking.client().model_input_example(version.source_uri)
    except MlflowError as exc:
        if not exc.permanent:
            raise Unavailable(f"MLflow could not be reached to read the model's input example: {exc}") from None
        example = None  # a model without a readable MLmodel has no example to offer
    cache.set(key, example, timeout=24 * 3600)
    return example


_MISSING = object()
