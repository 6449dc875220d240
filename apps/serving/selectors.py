from django.db.models import Q, QuerySet

from apps.accounts.models import Membership
from apps.core.errors import NotFound

from . import policy
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
        "environment", "model_version__model__team", "model_version__job", "requested_by"
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
    """Requests waiting for a decision this user may give (never their own), in a fixed
    number of queries. The policy decides again when the decision is made."""
    roles = dict(Membership.objects.filter(user=user).values_list("team_id", "role"))
    pending = (
        deployment_list(user=user, status=Deployment.Status.REQUESTED)
        .exclude(requested_by=user)
        .exclude(approvals__approver=user)
    )
    return [d for d in pending if policy.may_decide(roles_by_team=roles, user=user, deployment=d)]


def live_for(deployments) -> dict[tuple[int, int], Deployment]:
    """What is live now for each (environment, model) of ``deployments``, in one query."""
    envs = {d.environment_id for d in deployments}
    models = {d.model_version.model_id for d in deployments}
    live = Deployment.objects.filter(
        status=Deployment.Status.LIVE, environment_id__in=envs, model_version__model_id__in=models
    ).select_related("model_version__model")
    return {(d.environment_id, d.model_version.model_id): d for d in live}


def live_in(*, environment: Environment, model) -> Deployment | None:
    return (
        Deployment.objects.filter(environment=environment, model_version__model=model, status=Deployment.Status.LIVE)
        .select_related("model_version")
        .first()
    )
