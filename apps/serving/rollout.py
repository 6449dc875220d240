"""Deploying an approved request: re-check the policy and the artifact, start the server,
wait (boundedly) for it to answer, record it live.

Every state change is a compare-and-swap transition with its audit event; MLflow and the
backends are called with no transaction open. Safe to run twice."""

import logging
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.core.errors import Conflict, Unavailable
from apps.core.transitions import transition
from apps.integrations.serving.base import BackendStatus, ServingBackend, ServingError
from apps.registry import artifacts
from apps.registry.artifacts import ArtifactChanged

from . import backends, policy
from .models import Deployment, Environment
from .specs import spec_of

log = logging.getLogger(__name__)
D = Deployment.Status
READY_TIMEOUT_SECONDS = 180
KSERVE_WAIT_SECONDS = 10
VOID = "The approval is void and nothing was deployed."


def fail(deployment: Deployment, message: str) -> Deployment:
    return transition(
        obj=deployment,
        to=D.FAILED,
        transitions=Deployment.TRANSITIONS,
        action="deployment.failed",
        fields={"last_error": message},
        data={"error": message},
    )


def _note(deployment: Deployment, message: str) -> None:
    Deployment.objects.filter(pk=deployment.pk).update(last_error=message)


def verified_apply(deployment: Deployment) -> tuple[ServingBackend, BackendStatus]:
    """Check the artifact against the one approved, then ask the backend to serve it. A local
    server gets the very copy that was checked; KServe fetches the artifact itself.
    Raises ArtifactChanged, Unavailable or ServingError."""
    backend = backends.backend_for(deployment.environment)
    version = deployment.model_version
    if deployment.environment.backend != Environment.Backend.LOCAL:
        artifacts.model_version_artifact_check(version=version, expected_sha256=deployment.artifact_sha256)
        return backend, backend.apply(spec_of(deployment))
    incoming = Path(settings.AXLE_SERVING_DIR)
    incoming.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(prefix="incoming-", dir=incoming) as tmp:
        local = artifacts.model_version_artifact_fetch(
            version=version, expected_sha256=deployment.artifact_sha256, dest=tmp
        )
        return backend, backend.apply(spec_of(deployment, str(local)))


def start(deployment: Deployment, timeout: float | None = None) -> Deployment:
    """Serve a deployment that is deploying: verify, apply, wait. A failure that retrying
    cannot fix fails it; a transient one is noted and left to the reconciler."""
    try:
        backend, _ = verified_apply(deployment)
    except ArtifactChanged as exc:
        return fail(deployment, f"{exc.message} {VOID}")
    except Unavailable as exc:
        _note(deployment, exc.message)
        return deployment
    except ServingError as exc:
        if exc.permanent:
            return fail(deployment, exc.message)
        _note(deployment, exc.message)
        return deployment
    return _wait(deployment, backend, timeout)


def deployment_deploy(*, deployment_id: int) -> Deployment | None:
    """Serve an approved deployment. Safe to run twice: only one run moves it to deploying."""
    deployment = (
        Deployment.objects.select_related("environment", "model_version__model").filter(pk=deployment_id).first()
    )
    if deployment is None or deployment.status not in (D.APPROVED, D.FAILED, D.RETIRED):
        return deployment
    if not policy.approvals_met(deployment):
        if deployment.status == D.APPROVED:
            return fail(
                deployment,
                "Not enough approvals by someone other than the requester for this artifact that still hold.",
            )
        return deployment
    try:
        transition(obj=deployment, to=D.DEPLOYING, transitions=Deployment.TRANSITIONS, action="deployment.deploying")
    except Conflict:
        return deployment
    return start(deployment)


def _wait(deployment: Deployment, backend: ServingBackend, timeout: float | None) -> Deployment:
    """Wait, boundedly, for the backend to say it serves. A local server is up in seconds;
    KServe may take minutes, so the worker does not wait for it and the reconciler records
    it live when Kubernetes says it is ready."""
    if timeout is None:
        local = deployment.environment.backend == Environment.Backend.LOCAL
        timeout = READY_TIMEOUT_SECONDS if local else KSERVE_WAIT_SECONDS
    name, namespace = deployment.backend_name, deployment.environment.namespace
    try:
        deadline = time.monotonic() + timeout
        status = backend.status(name, namespace)
        while not status.ready and time.monotonic() < deadline:
            time.sleep(1)
            status = backend.status(name, namespace)
    except ServingError as exc:
        if exc.permanent:
            return fail(deployment, exc.message)
        _note(deployment, exc.message)
        return deployment
    if not status.ready:
        _note(deployment, status.message or "not ready yet")
        return deployment
    return went_live(deployment, status.url)


def went_live(deployment: Deployment, url: str) -> Deployment:
    with transaction.atomic():
        deployment = transition(
            obj=deployment,
            to=D.LIVE,
            transitions=Deployment.TRANSITIONS,
            action="deployment.live",
            fields={"url": url, "live_at": timezone.now(), "last_error": ""},
            data={"url": url},
        )
        # What this replaces in the environment stops being live.
        replaced = list(
            Deployment.objects.filter(
                environment=deployment.environment,
                model_version__model=deployment.model_version.model,
                status=D.LIVE,
            ).exclude(pk=deployment.pk)
        )
        for older in replaced:
            transition(
                obj=older,
                to=D.RETIRED,
                transitions=Deployment.TRANSITIONS,
                action="deployment.retired",
                fields={"retired_at": timezone.now()},
                data={"replaced_by": str(deployment.uuid)},
            )
        rolled_back = list(Deployment.objects.filter(replaces=deployment, status=D.ROLLED_BACK))
    # Their own servers (a local server per deployment) stop now; a shared one (KServe's
    # InferenceService per model) is the one that just went live and stays.
    stop_servers(deployment.environment, {d.backend_name for d in replaced + rolled_back} - {deployment.backend_name})
    return deployment


def stop_servers(environment: Environment, names: set[str]) -> None:
    for name in sorted(names):
        try:
            backends.backend_for(environment).delete(name, environment.namespace)
        except ServingError as exc:
            log.warning("stopping %s in %s failed: %s", name, environment.name, exc)
