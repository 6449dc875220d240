"""Governed serving: request, four-eyes decisions, retire, roll back, predict.

The rule itself lives in policy.py; deploying (artifact check, start, wait) in rollout.py;
keeping what runs in line with what should in reconcile.py. Every state change is a
compare-and-swap transition with its audit event; backends are called with no transaction
open."""

import uuid
from dataclasses import asdict

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.models import Membership, User
from apps.audit.services import audit_record
from apps.core.errors import Conflict, PermissionDenied, Unavailable, ValidationFailed
from apps.core.tasks import enqueue
from apps.core.transitions import transition
from apps.integrations.serving.base import Resources, ServingError
from apps.registry.models import ModelVersion

from . import backends, notifications, policy
from .models import Deployment, DeploymentApproval, Environment
from .reconcile import serving_reconcile  # noqa: F401  (the public surface of the serving app)
from .rollout import deployment_deploy  # noqa: F401
from .specs import name_of

D = Deployment.Status


def _move(deployment: Deployment, to: str, *, action: str, user: User, **changes) -> Deployment:
    """`transition` of a deployment (compare-and-swap, audited); `changes` are its fields and data."""
    return transition(obj=deployment, to=to, transitions=Deployment.TRANSITIONS, action=action, actor=user, **changes)


def _approve(deployment: Deployment, *, user: User, why: dict) -> None:
    """Approved: deploy once the transaction commits."""
    _move(deployment, D.APPROVED, action="deployment.approved", user=user, data=why)
    enqueue("apps.serving.tasks.deployment_deploy", deployment.pk)


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
    if live is not None and live.model_version_id == model_version.pk:
        # Serving again what already serves would only restart it and spend an approver's time.
        raise Conflict(
            f"{model_version} is already live in {environment.name} (since "
            f"{timezone.localtime(live.live_at or live.updated_at):%Y-%m-%d %H:%M %Z}); "
            "request another version, or retire this one first."
        )
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
        deployment = Deployment(
            uuid=uuid.uuid4(),
            environment=environment,
            model_version=model_version,
            requested_by=user,
            reason=reason,
            artifact_sha256=model_version.sha256,
            required_approvals=environment.required_approvals,
            resources=asdict(resources_obj),
            canary_percent=canary_percent,
            replaces=live,
        )
        deployment.backend_name = name_of(deployment)
        deployment.save()
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
        if policy.required_approvals(deployment) == 0:
            _approve(deployment, user=user, why={"approvals": 0, "rule": f"{environment.name} needs no approval"})
        else:
            notifications.approval_wanted(deployment)
    return deployment


def _decide(*, user: User, deployment: Deployment, decision: str, comment: str) -> Deployment:
    allowed, why = policy.can_approve(user, deployment)
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
            _move(locked, D.REJECTED, action="deployment.rejected", user=user, data={"comment": comment.strip()})
        elif policy.approvals_met(locked):
            _approve(locked, user=user, why={"approvals": policy.valid_approvals(locked).count()})
        if locked.status != D.REQUESTED:
            notifications.decided(locked, by=user, decision=decision, comment=comment.strip())
    return locked


def deployment_approve(*, user: User, deployment: Deployment, comment: str = "") -> Deployment:
    return _decide(user=user, deployment=deployment, decision=DeploymentApproval.Decision.APPROVE, comment=comment)


def deployment_reject(*, user: User, deployment: Deployment, comment: str = "") -> Deployment:
    return _decide(user=user, deployment=deployment, decision=DeploymentApproval.Decision.REJECT, comment=comment)


def deployment_withdraw(*, user: User, deployment: Deployment) -> Deployment:
    """The requester takes back a request nobody has decided yet."""
    if user.pk != deployment.requested_by_id:
        raise PermissionDenied("Only the requester can withdraw a deployment request.")
    if deployment.status != D.REQUESTED:
        raise Conflict(f"This request is {deployment.get_status_display().lower()}, so it can no longer be withdrawn.")
    return _move(deployment, D.WITHDRAWN, action="deployment.withdrawn", user=user)


def deployment_retire(*, user: User, deployment: Deployment) -> Deployment:
    _may_operate(user, deployment)
    if deployment.status != D.LIVE:
        raise Conflict("Only a live deployment can be retired.")
    _move(deployment, D.RETIRED, action="deployment.retired", user=user, fields={"retired_at": timezone.now()})
    try:
        backends.backend_for(deployment.environment).delete(deployment.backend_name, deployment.environment.namespace)
    except ServingError as exc:
        Deployment.objects.filter(pk=deployment.pk).update(last_error=f"Stopping the server failed: {exc}")
    return deployment


def _may_operate(user: User, deployment: Deployment) -> None:
    if policy.may_operate(user, deployment):
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
        _move(
            deployment, D.ROLLED_BACK, action="deployment.rolled_back", user=user, data={"back_to": str(previous.uuid)}
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
        return backends.backend_for(deployment.environment).predict(
            deployment.backend_name, deployment.environment.namespace, payload
        )
    except ServingError as exc:
        if exc.permanent:
            raise ValidationFailed(f"The model server refused the input: {exc.message}") from None
        raise Unavailable(f"The model server could not be reached: {exc.message}") from None
