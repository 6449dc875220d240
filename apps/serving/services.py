"""Governed serving: request, four-eyes approval bound to the artifact, deploy, roll back.

Every state change is a compare-and-swap transition with its audit event; backends (model
servers, KServe) and MLflow are called with no transaction open."""

import hashlib
import logging
import re
import time
from dataclasses import asdict

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.models import Membership, User
from apps.audit.services import audit_record
from apps.core import crypto
from apps.core.errors import Conflict, PermissionDenied, Unavailable, ValidationFailed
from apps.core.tasks import enqueue
from apps.core.transitions import transition
from apps.integrations.mlflow.base import MlflowError
from apps.integrations.serving.base import DeploymentSpec, Resources, ServingError
from apps.registry.models import ModelVersion

from .backends import backend_for
from .models import Deployment, DeploymentApproval, Environment

log = logging.getLogger(__name__)
D = Deployment.Status
ROLE_RANK = {Membership.Role.MEMBER: 0, Membership.Role.APPROVER: 1, Membership.Role.ADMIN: 2}
READY_TIMEOUT_SECONDS = 180
KSERVE_WAIT_SECONDS = 10


def _required(deployment: Deployment) -> int:
    # Lowering an environment's bar after a request was made must not let it through.
    return max(deployment.required_approvals, deployment.environment.required_approvals)


def approver_team(deployment: Deployment):
    return deployment.environment.approver_team or deployment.model_version.model.team


def can_approve(user: User, deployment: Deployment) -> tuple[bool, str]:
    """Whether ``user`` may decide ``deployment``, and why not."""
    if user.pk == deployment.requested_by_id:
        return False, "You requested this deployment; someone else must approve or reject it (four eyes)."
    team = approver_team(deployment)
    need = ROLE_RANK[deployment.environment.approver_role]
    membership = Membership.objects.filter(user=user, team=team).first()
    if membership is None or ROLE_RANK[membership.role] < need:
        return False, (
            f"Approving for {deployment.environment.name} needs the {deployment.environment.approver_role} role "
            f"in team {team.name}."
        )
    return True, ""


def valid_approvals(deployment: Deployment):
    """Approvals that count: by someone other than the requester, for this very artifact."""
    return deployment.approvals.filter(
        decision=DeploymentApproval.Decision.APPROVE, artifact_sha256=deployment.artifact_sha256
    ).exclude(approver_id=deployment.requested_by_id)


def _backend_name(model_name: str, environment: Environment) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", f"{model_name}-{environment.name}".lower()).strip("-")
    if not name[:1].isalpha():
        name = f"m-{name}"  # Kubernetes names (and so KServe) must start with a letter
    return name[:63].rstrip("-") or "model"


def _notify(subject: str, body: str, recipients: list[str]) -> None:
    recipients = sorted({r for r in recipients if r})
    if recipients:
        transaction.on_commit(
            lambda: send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients, fail_silently=True)
        )


def _approver_emails(deployment: Deployment) -> list[str]:
    team = approver_team(deployment)
    need = ROLE_RANK[deployment.environment.approver_role]
    roles = [r for r, rank in ROLE_RANK.items() if rank >= need]
    return list(
        Membership.objects.filter(team=team, role__in=roles)
        .exclude(user=deployment.requested_by)
        .values_list("user__email", flat=True)
    )


# ---------------------------------------------------------------- request and decisions


def deployment_request(
    *,
    user: User,
    model_version: ModelVersion,
    environment: Environment,
    reason: str,
    resources: dict | None = None,
    canary_percent: int | None = None,
) -> Deployment:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("Say why this version should be served, for the approvers.")
    if not environment.is_active:
        raise ValidationFailed(f"Environment {environment.name} does not accept deployments right now.")
    if not Membership.objects.filter(user=user, team=model_version.model.team).exists():
        raise PermissionDenied("Only members of the model's team can request its deployment.")
    if not model_version.sha256:
        raise ValidationFailed("This model version has no recorded artifact sha256, so it cannot be approved.")
    live = Deployment.objects.filter(
        environment=environment, model_version__model=model_version.model, status=D.LIVE
    ).first()
    if canary_percent is not None:
        if not 1 <= canary_percent <= 99:
            raise ValidationFailed("A canary percentage is between 1 and 99.")
        if live is None:
            raise Conflict(
                f"Nothing of {model_version.model.name} is live in {environment.name}, so there is no canary."
            )
        if environment.backend != Environment.Backend.KSERVE:
            raise Conflict("Canary traffic splitting needs an environment served by KServe.")
    try:
        resources_obj = Resources(**(resources or {}))
    except TypeError:
        raise ValidationFailed("resources takes cpu, memory and gpus.") from None
    if Deployment.objects.filter(
        environment=environment, model_version=model_version, status__in=[D.REQUESTED, D.APPROVED, D.DEPLOYING]
    ).exists():
        raise Conflict(f"{model_version} already has an open request for {environment.name}.")
    with transaction.atomic():
        deployment = Deployment.objects.create(
            environment=environment,
            model_version=model_version,
            requested_by=user,
            reason=reason,
            artifact_sha256=model_version.sha256,
            required_approvals=environment.required_approvals,
            resources=asdict(resources_obj),
            canary_percent=canary_percent,
            backend_name=_backend_name(model_version.model.name, environment),
            replaces=live,
        )
        audit_record(
            action="deployment.requested",
            subject=deployment,
            actor=user,
            after={
                "status": deployment.status,
                "environment": environment.name,
                "model": model_version.model.name,
                "version": model_version.number,
                "artifact_sha256": deployment.artifact_sha256,
                "required_approvals": deployment.required_approvals,
                "canary_percent": canary_percent,
            },
        )
        if _required(deployment) == 0:
            transition(
                obj=deployment,
                to=D.APPROVED,
                transitions=Deployment.TRANSITIONS,
                action="deployment.approved",
                actor=user,
                data={"approvals": 0, "rule": f"{environment.name} needs no approval"},
            )
            enqueue("apps.serving.tasks.deployment_deploy", deployment.pk)
        else:
            _notify(
                f"[Axle] Approval wanted: {model_version} to {environment.name}",
                f"{user.get_username()} asks to serve {model_version} in {environment.name}.\nReason: {reason}\n"
                f"Review it in your Axle approvals inbox.",
                _approver_emails(deployment),
            )
    return deployment


def _decide(*, user: User, deployment: Deployment, decision: str, comment: str) -> Deployment:
    allowed, why = can_approve(user, deployment)
    if not allowed:
        raise PermissionDenied(why)
    with transaction.atomic():
        locked = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if locked.status != D.REQUESTED:
            raise Conflict(f"This request was already decided ({locked.get_status_display().lower()}).")
        try:
            with transaction.atomic():
                DeploymentApproval.objects.create(
                    deployment=locked,
                    approver=user,
                    decision=decision,
                    comment=comment.strip(),
                    artifact_sha256=locked.artifact_sha256,
                )
        except IntegrityError:
            raise Conflict("You already decided this request.") from None
        audit_record(
            action=f"deployment.{decision}_given",
            subject=locked,
            actor=user,
            after={"comment": comment.strip(), "artifact_sha256": locked.artifact_sha256},
        )
        if decision == DeploymentApproval.Decision.REJECT:
            transition(
                obj=locked,
                to=D.REJECTED,
                transitions=Deployment.TRANSITIONS,
                action="deployment.rejected",
                actor=user,
                data={"comment": comment.strip()},
            )
        elif valid_approvals(locked).count() >= _required(locked):
            transition(
                obj=locked,
                to=D.APPROVED,
                transitions=Deployment.TRANSITIONS,
                action="deployment.approved",
                actor=user,
                data={"approvals": valid_approvals(locked).count()},
            )
            enqueue("apps.serving.tasks.deployment_deploy", locked.pk)
        if locked.status != D.REQUESTED:
            _notify(
                f"[Axle] {locked.model_version} to {locked.environment.name}: {locked.get_status_display().lower()}",
                f"{user.get_username()} {decision}d your request.\nComment: {comment.strip() or '-'}",
                [locked.requested_by.email],
            )
    return locked


def deployment_approve(*, user: User, deployment: Deployment, comment: str = "") -> Deployment:
    return _decide(user=user, deployment=deployment, decision=DeploymentApproval.Decision.APPROVE, comment=comment)


def deployment_reject(*, user: User, deployment: Deployment, comment: str = "") -> Deployment:
    return _decide(user=user, deployment=deployment, decision=DeploymentApproval.Decision.REJECT, comment=comment)


# ---------------------------------------------------------------- deploying


def _spec(deployment: Deployment) -> DeploymentSpec:
    version = deployment.model_version
    backend = deployment.environment.backend
    return DeploymentSpec(
        name=deployment.backend_name,
        namespace=deployment.environment.namespace,
        model_name=version.model.name,
        model_version=str(version.number),
        # The local server resolves the registry URI against the hub's MLflow; KServe
        # fetches the stored artifact itself.
        model_uri=f"models:/{version.model.name}/{version.number}" if backend == "local" else version.artifact_uri,
        artifact_sha256=deployment.artifact_sha256,
        resources=Resources(**(deployment.resources or {})),
        canary_percent=deployment.canary_percent,
        labels={"axle.deployment": str(deployment.uuid)[:63]},
    )


def _fail(deployment: Deployment, message: str) -> Deployment:
    return transition(
        obj=deployment,
        to=D.FAILED,
        transitions=Deployment.TRANSITIONS,
        action="deployment.failed",
        fields={"last_error": message},
        data={"error": message},
    )


def _check_artifact(deployment: Deployment) -> str | None:
    """Compare the artifact as it is now with what was approved; None when it matches."""
    from apps.jobs.tracking import client

    try:
        actual = client().model_sha256(deployment.model_version.source_uri)
    except MlflowError as exc:
        if exc.permanent:
            return f"The model's artifact cannot be read any more ({exc}); the approval is void."
        raise Unavailable(f"MLflow could not be reached to check the artifact: {exc}") from None
    if actual != deployment.artifact_sha256:
        return (
            f"The model's artifact changed since it was approved (approved {deployment.artifact_sha256[:12]}…, "
            f"now {actual[:12]}…); the approval is void and nothing was deployed."
        )
    return None


def deployment_deploy(*, deployment_id: int) -> Deployment | None:
    """Serve an approved deployment. Safe to run twice: only one run moves it to deploying."""
    deployment = (
        Deployment.objects.select_related("environment", "model_version__model").filter(pk=deployment_id).first()
    )
    if deployment is None or deployment.status not in (D.APPROVED, D.FAILED, D.RETIRED):
        return deployment
    if valid_approvals(deployment).count() < _required(deployment):
        if deployment.status == D.APPROVED:
            return _fail(deployment, "Not enough approvals by someone other than the requester for this artifact.")
        return deployment
    try:
        transition(obj=deployment, to=D.DEPLOYING, transitions=Deployment.TRANSITIONS, action="deployment.deploying")
    except Conflict:
        return deployment
    try:
        problem = _check_artifact(deployment)
    except Unavailable as exc:
        Deployment.objects.filter(pk=deployment.pk).update(last_error=exc.message)
        return deployment  # the reconciler tries again
    if problem:
        return _fail(deployment, problem)
    return _converge(deployment)


def _converge(deployment: Deployment, timeout: float | None = None) -> Deployment:
    """Apply the spec and wait, boundedly, for the backend to say it serves. A local server
    is up in seconds; KServe may take minutes, so the worker does not wait for it and the
    reconciler records it live when Kubernetes says it is ready."""
    if timeout is None:
        timeout = READY_TIMEOUT_SECONDS if deployment.environment.backend == "local" else KSERVE_WAIT_SECONDS
    try:
        backend = backend_for(deployment.environment)
        backend.apply(_spec(deployment))
        deadline = time.monotonic() + timeout
        status = backend.status(deployment.backend_name, deployment.environment.namespace)
        while not status.ready and time.monotonic() < deadline:
            time.sleep(1)
            status = backend.status(deployment.backend_name, deployment.environment.namespace)
    except ServingError as exc:
        if exc.permanent:
            return _fail(deployment, exc.message)
        Deployment.objects.filter(pk=deployment.pk).update(last_error=exc.message)
        return deployment
    if not status.ready:
        Deployment.objects.filter(pk=deployment.pk).update(last_error=status.message or "not ready yet")
        return deployment
    return _went_live(deployment, status.url)


def _went_live(deployment: Deployment, url: str) -> Deployment:
    with transaction.atomic():
        deployment = transition(
            obj=deployment,
            to=D.LIVE,
            transitions=Deployment.TRANSITIONS,
            action="deployment.live",
            fields={"url": url, "live_at": timezone.now(), "last_error": ""},
            data={"url": url},
        )
        # What this replaces in the environment stops being live (its server was replaced).
        for older in Deployment.objects.filter(
            environment=deployment.environment,
            model_version__model=deployment.model_version.model,
            status=D.LIVE,
        ).exclude(pk=deployment.pk):
            transition(
                obj=older,
                to=D.RETIRED,
                transitions=Deployment.TRANSITIONS,
                action="deployment.retired",
                fields={"retired_at": timezone.now()},
                data={"replaced_by": str(deployment.uuid)},
            )
    return deployment


def deployment_retire(*, user: User, deployment: Deployment) -> Deployment:
    _may_operate(user, deployment)
    if deployment.status != D.LIVE:
        raise Conflict("Only a live deployment can be retired.")
    transition(
        obj=deployment,
        to=D.RETIRED,
        transitions=Deployment.TRANSITIONS,
        action="deployment.retired",
        actor=user,
        fields={"retired_at": timezone.now()},
    )
    try:
        backend_for(deployment.environment).delete(deployment.backend_name, deployment.environment.namespace)
    except ServingError as exc:
        Deployment.objects.filter(pk=deployment.pk).update(last_error=f"Stopping the server failed: {exc}")
    return deployment


def _may_operate(user: User, deployment: Deployment) -> None:
    if user.pk == deployment.requested_by_id or user.is_staff or can_approve(user, deployment)[0]:
        return
    raise PermissionDenied("Only the requester, an approver of this environment or an administrator can do that.")


def deployment_rollback(*, user: User, deployment: Deployment) -> Deployment:
    """Return the environment to the version that was live before this one, in one action."""
    _may_operate(user, deployment)
    previous = deployment.replaces
    if deployment.status != D.LIVE:
        raise Conflict("Only the live deployment can be rolled back.")
    if previous is None or previous.status != D.RETIRED:
        raise Conflict("There is no previously live version to return to.")
    with transaction.atomic():
        transition(
            obj=deployment,
            to=D.ROLLED_BACK,
            transitions=Deployment.TRANSITIONS,
            action="deployment.rolled_back",
            actor=user,
            data={"back_to": str(previous.uuid)},
        )
        audit_record(
            action="deployment.rollback_started", subject=previous, actor=user, after={"from": str(deployment.uuid)}
        )
        enqueue("apps.serving.tasks.deployment_deploy", previous.pk)
    return previous


def deployment_predict(*, user: User, deployment: Deployment, payload) -> dict:
    if deployment.status != D.LIVE:
        raise Conflict(f"The deployment is {deployment.get_status_display().lower()}, not live.")
    if not isinstance(payload, dict):
        raise ValidationFailed('Send a JSON object, e.g. {"inputs": [[...]]} or {"dataframe_split": {...}}.')
    try:
        return backend_for(deployment.environment).predict(
            deployment.backend_name, deployment.environment.namespace, payload
        )
    except ServingError as exc:
        if exc.permanent:
            raise ValidationFailed(f"The model server refused the input: {exc.message}") from None
        raise Unavailable(f"The model server could not be reached: {exc.message}") from None


# ---------------------------------------------------------------- reconciliation


def serving_reconcile() -> dict[str, int]:
    """Make what runs match what should: finish deployments a dead worker left deploying,
    restart live ones whose server is gone, stop servers nothing live owns."""
    counts = {"converged": 0, "restarted": 0, "stopped": 0}

    # Environments that share a backend and namespace (two local ones, say) share the
    # servers there: what one of them wants must not be stopped on behalf of the other.
    def place(env: Environment) -> tuple[str, str, str]:
        # Ciphertexts of the same kubeconfig differ; what it says decides the cluster.
        try:
            config = crypto.decrypt(env.kubeconfig_encrypted) if env.kubeconfig_encrypted else ""
        except crypto.SecretUnreadable:
            config = env.kubeconfig_encrypted
        return env.backend, env.namespace, hashlib.sha256(config.encode()).hexdigest()

    wanted: dict[tuple[str, str, str], set[str]] = {}
    for deployment in Deployment.objects.filter(status__in=Deployment.SERVING).select_related(
        "environment", "model_version__model"
    ):
        env = deployment.environment
        wanted.setdefault(place(env), set()).add(deployment.backend_name)
        try:
            # One environment without a usable kubeconfig must not stop the others' reconciling.
            backend = backend_for(env)
            status = backend.status(deployment.backend_name, env.namespace)
        except ServingError as exc:
            log.warning("status of %s failed: %s", deployment.backend_name, exc)
            continue
        if deployment.status == D.DEPLOYING:
            # The worker may have died before the artifact check, and a ready status under
            # this name may be the version this one replaces: check, then apply our own spec.
            try:
                problem = _check_artifact(deployment)
            except Unavailable as exc:
                Deployment.objects.filter(pk=deployment.pk).update(last_error=exc.message)
                continue
            if problem:
                _fail(deployment, problem)
            else:
                _converge(deployment, timeout=0)
            counts["converged"] += 1
        elif not status.ready:
            try:
                backend.apply(_spec(deployment))
                counts["restarted"] += 1
            except ServingError as exc:
                Deployment.objects.filter(pk=deployment.pk).update(last_error=exc.message)
    places = {place(env): env for env in Environment.objects.filter(is_active=True)}
    for key, env in places.items():
        try:
            backend = backend_for(env)
            running = set(backend.list_names(env.namespace))
        except ServingError:
            continue
        for name in running - wanted.get(key, set()):
            backend.delete(name, env.namespace)
            counts["stopped"] += 1
    return counts
