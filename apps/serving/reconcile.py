"""Make what runs match what should: finish deployments a dead worker left deploying,
restart live ones whose server is gone, stop servers nothing live owns.

Nothing is (re)started without asking again whether it may be: the approvals must still hold
under the policy, and the artifact must still be the one approved (the local server gets the
very copy that was checked). A live deployment that may not be restarted is failed with the
reason, so no row says live while nothing serves it. Every start and stop the reconciler makes
is an audit event."""

import hashlib
import logging

from apps.audit.services import audit_record
from apps.core import crypto
from apps.core.errors import Unavailable
from apps.integrations.serving.base import ServingError
from apps.registry.artifacts import ArtifactChanged

from . import backends, policy, rollout
from .models import Deployment, Environment

log = logging.getLogger(__name__)
D = Deployment.Status


def _place(env: Environment) -> tuple[str, str, str]:
    """Environments that share a backend and namespace (two local ones, say) share the
    servers there: what one of them wants must not be stopped on behalf of the other."""
    # Ciphertexts of the same kubeconfig differ; what it says decides the cluster.
    try:
        config = crypto.decrypt(env.kubeconfig_encrypted) if env.kubeconfig_encrypted else ""
    except crypto.SecretUnreadable:
        config = env.kubeconfig_encrypted
    return env.backend, env.namespace, hashlib.sha256(config.encode()).hexdigest()


def _may_start(deployment: Deployment) -> bool:
    if policy.approvals_met(deployment):
        return True
    rollout.fail(
        deployment,
        f"Its approvals no longer hold ({policy.valid_approvals(deployment).count()} valid of "
        f"{policy.required_approvals(deployment)} needed), so its server was not started again.",
    )
    return False


def _resume(deployment: Deployment) -> bool:
    """A deployment a dead worker left deploying. A ready status under its name may be the
    version it replaces (KServe), so check and apply our own spec."""
    if not _may_start(deployment):
        return False
    rollout.start(deployment, timeout=0)
    deployment.refresh_from_db()
    if deployment.status in (D.DEPLOYING, D.LIVE):
        audit_record(
            action="deployment.server_started",
            subject=deployment,
            after={"by": "reconciler", "reason": "left deploying", "artifact_sha256": deployment.artifact_sha256},
        )
    return True


def _restart(deployment: Deployment, why: str) -> str:
    """A live deployment whose server is gone: "restarted", "refused" (now failed), or ""
    (it was only still loading, or something outside is down: next round)."""
    if not _may_start(deployment):
        return "refused"
    try:
        _, result = rollout.verified_apply(deployment)
    except ArtifactChanged as exc:
        rollout.fail(deployment, f"{exc.message} Its server was not started again.")
        return "refused"
    except (Unavailable, ServingError) as exc:
        if isinstance(exc, ServingError) and exc.permanent:
            rollout.fail(deployment, f"Its server could not be started again: {exc.message}")
            return "refused"
        Deployment.objects.filter(pk=deployment.pk).update(last_error=exc.message)
        return ""
    if not result.changed:
        return ""
    audit_record(
        action="deployment.server_restarted",
        subject=deployment,
        after={"by": "reconciler", "was": why, "artifact_sha256": deployment.artifact_sha256},
    )
    return "restarted"


def serving_reconcile() -> dict[str, int]:
    counts = {"converged": 0, "restarted": 0, "stopped": 0, "refused": 0}
    wanted: dict[tuple[str, str, str], set[str]] = {}
    for deployment in Deployment.objects.filter(status__in=Deployment.SERVING).select_related(
        "environment", "model_version__model"
    ):
        env = deployment.environment
        wanted.setdefault(_place(env), set()).add(deployment.backend_name)
        try:
            # One environment without a usable kubeconfig must not stop the others' reconciling.
            status = backends.backend_for(env).status(deployment.backend_name, env.namespace)
        except ServingError as exc:
            log.warning("status of %s failed: %s", deployment.backend_name, exc)
            continue
        if deployment.status == D.DEPLOYING:
            counts["converged" if _resume(deployment) else "refused"] += 1
        elif not status.ready:
            outcome = _restart(deployment, status.message)
            if outcome:
                counts[outcome] += 1
    places = {_place(env): env for env in Environment.objects.filter(is_active=True)}
    for key, env in places.items():
        try:
            backend = backends.backend_for(env)
            running = set(backend.list_names(env.namespace))
        except ServingError:
            continue
        for name in sorted(running - wanted.get(key, set())):
            try:
                backend.delete(name, env.namespace)
            except ServingError as exc:
                log.warning("stopping %s failed: %s", name, exc)
                continue
            owner = Deployment.objects.filter(backend_name=name, environment__namespace=env.namespace).first()
            audit_record(
                action="deployment.server_stopped",
                subject=owner or env,
                after={"by": "reconciler", "name": name, "namespace": env.namespace, "reason": "nothing live owns it"},
            )
            counts["stopped"] += 1
    return counts
