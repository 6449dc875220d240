from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Coalesce
from django.urls import reverse

from apps.accounts.models import Membership
from apps.core.errors import NotFound
from apps.registry.placements import Placement

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


def waiting_for(*, user) -> QuerySet[Deployment]:
    """The inbox as one query: requests this user may decide and has not. The same rule as
    `policy.may_decide` (approver team or the model's own, a role at least the environment's),
    written in SQL so the nav badge costs one COUNT on every page."""
    if not user.is_authenticated or not user.is_active:
        return Deployment.objects.none()
    memberships = Membership.objects.filter(
        user=user, team=Coalesce(OuterRef("environment__approver_team"), OuterRef("model_version__model__team"))
    )
    may_decide = Q()
    for role in policy.ROLE_RANK:
        may_decide |= Q(environment__approver_role=role) & Exists(
            memberships.filter(role__in=policy.roles_at_least(role))
        )
    return (
        Deployment.objects.filter(status=Deployment.Status.REQUESTED)
        .filter(may_decide)
        .exclude(requested_by=user)
        .exclude(approvals__approver=user)
    )


def waiting_count(*, user) -> int:
    return waiting_for(user=user).count()


def next_waiting(*, user) -> Deployment | None:
    """The request that has waited longest for this user's decision."""
    return waiting_for(user=user).order_by("created_at").first()


def live_for(deployments) -> dict[tuple[int, int], Deployment]:
    """What is live now for each (environment, model) of ``deployments``, in one query."""
    envs = {d.environment_id for d in deployments}
    models = {d.model_version.model_id for d in deployments}
    live = Deployment.objects.filter(
        status=Deployment.Status.LIVE, environment_id__in=envs, model_version__model_id__in=models
    ).select_related("model_version__model")
    return {(d.environment_id, d.model_version.model_id): d for d in live}


def live_placements(versions) -> dict[int, list[Placement]]:
    """Where each of ``versions`` is live now, by version pk, in one query (the registry's
    pages ask through apps.registry.placements)."""
    live: dict[int, list[Placement]] = {}
    rows = (
        Deployment.objects.filter(status=Deployment.Status.LIVE, model_version__in=versions.values("pk"))
        .order_by("environment__name")
        .values_list(
            "model_version_id", "environment__name", "uuid", "model_version__model_id", "model_version__number"
        )
    )
    for version_id, environment, uuid, model_id, number in rows:
        url = reverse("deployment-detail", args=[uuid])
        live.setdefault(version_id, []).append(Placement(environment, url, model_id, number))
    return live


def live_in(*, environment: Environment, model) -> Deployment | None:
    return (
        Deployment.objects.filter(environment=environment, model_version__model=model, status=Deployment.Status.LIVE)
        .select_related("model_version")
        .first()
    )
