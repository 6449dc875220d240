"""The four-eyes approval policy, in one place: which roles count, who may approve a request,
how many approvals it needs, and which of its approvals are still valid.

Services (deciding, deploying, the reconciler restarting a server), selectors (the inbox),
views, the API and the admin all ask here; nothing else encodes the rule."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.accounts.models import Membership, Team, User

from .models import Deployment, DeploymentApproval

ROLE_RANK = {Membership.Role.MEMBER: 0, Membership.Role.APPROVER: 1, Membership.Role.ADMIN: 2}


def roles_at_least(role: str) -> list[str]:
    need = ROLE_RANK[role]
    return [r for r, rank in ROLE_RANK.items() if rank >= need]


def approver_team(deployment: Deployment) -> Team:
    """The team whose members decide: the environment's approver team, else the model's own."""
    return deployment.environment.approver_team or deployment.model_version.model.team


def approver_team_id(deployment: Deployment) -> int:
    return deployment.environment.approver_team_id or deployment.model_version.model.team_id


def required_approvals(deployment: Deployment) -> int:
    """How many approvals the request needs. Lowering an environment's bar after a request
    was made must not let it through: the stricter of then and now applies."""
    return max(deployment.required_approvals, deployment.environment.required_approvals)


def role_may_approve(role: str | None, deployment: Deployment) -> bool:
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[deployment.environment.approver_role]


def can_approve(user: User, deployment: Deployment) -> tuple[bool, str]:
    """Whether ``user`` may decide ``deployment``, and why not."""
    if user.pk == deployment.requested_by_id:
        return False, "You requested this deployment; someone else must approve or reject it (four eyes)."
    team = approver_team(deployment)
    membership = Membership.objects.filter(user=user, team=team).first()
    if not user.is_active or not role_may_approve(membership.role if membership else None, deployment):
        return False, (
            f"Approving for {deployment.environment.name} needs the {deployment.environment.approver_role} role "
            f"in team {team.name}."
        )
    return True, ""


def may_decide(*, roles_by_team: dict[int, str], user: User, deployment: Deployment) -> bool:
    """`can_approve` for a list (the inbox), from the user's memberships read once."""
    if user.pk == deployment.requested_by_id or not user.is_active:
        return False
    return role_may_approve(roles_by_team.get(approver_team_id(deployment)), deployment)


def approvers(deployment: Deployment) -> QuerySet[User]:
    """Everyone who may decide the request (to tell them it waits)."""
    return User.objects.filter(
        is_active=True,
        memberships__team=approver_team(deployment),
        memberships__role__in=roles_at_least(deployment.environment.approver_role),
    ).exclude(pk=deployment.requested_by_id)


def valid_approvals(deployment: Deployment) -> QuerySet[DeploymentApproval]:
    """Approvals that count now: by someone other than the requester, for this very artifact,
    given by a user who is still active and still holds a role that may approve."""
    return (
        deployment.approvals.filter(
            decision=DeploymentApproval.Decision.APPROVE,
            artifact_sha256=deployment.artifact_sha256,
            approver__is_active=True,
            approver__memberships__team=approver_team(deployment),
            approver__memberships__role__in=roles_at_least(deployment.environment.approver_role),
        )
        .exclude(approver_id=deployment.requested_by_id)
        .distinct()
    )


def approvals_met(deployment: Deployment) -> bool:
    need = required_approvals(deployment)
    return need == 0 or valid_approvals(deployment).count() >= need


def may_operate(user: User, deployment: Deployment) -> bool:
    """Retire or roll back: the requester, an approver of the environment, or staff."""
    return user.pk == deployment.requested_by_id or user.is_staff or can_approve(user, deployment)[0]
