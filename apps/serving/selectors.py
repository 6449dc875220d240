from django.db.models import Q, QuerySet

from apps.core.errors import NotFound

from .models import Deployment, Environment


def environment_list(*, user) -> QuerySet[Environment]:
    return Environment.objects.filter(is_active=True).order_by("name")


def environment_get(*, user, ident: str) -> Environment:
    env = environment_list(user=user).filter(name=ident).first()
    if env is None:
        raise NotFound(f"No environment {ident!r}.")
    return env


def deployment_list(*, user, status: str = "", environment: str = "") -> QuerySet[Deployment]:
    """Deployments of the user's teams' models, and those they may approve."""
    qs = Deployment.objects.select_related(
        "environment", "model_version__model__team", "requested_by"
    ).prefetch_related("approvals__approver")
    if not user.is_staff:
        qs = qs.filter(
            Q(model_version__model__team__memberships__user=user)
            | Q(environment__approver_team__memberships__user=user)
        ).distinct()
    if status:
        qs = qs.filter(status=status)
    if environment:
        qs = qs.filter(environment__name=environment)
    return qs.order_by("-created_at")


def deployment_get(*, user, id) -> Deployment:
    deployment = deployment_list(user=user).filter(uuid=id).first()
    if deployment is None:
        raise NotFound("No such deployment.")
    return deployment


def inbox(*, user) -> list[Deployment]:
    """Requests waiting for a decision this user may give (never their own)."""
    from .services import can_approve

    pending = deployment_list(user=user, status=Deployment.Status.REQUESTED).exclude(requested_by=user)
    return [d for d in pending if can_approve(user, d)[0] and not d.approvals.filter(approver=user).exists()]


def live_in(*, environment: Environment, model) -> Deployment | None:
    return (
        Deployment.objects.filter(environment=environment, model_version__model=model, status=Deployment.Status.LIVE)
        .select_related("model_version")
        .first()
    )
