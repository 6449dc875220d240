from django.conf import settings
from django.db import models

from apps.accounts.models import Membership, Team
from apps.core.models import BaseModel
from apps.registry.models import ModelVersion


class Environment(BaseModel):
    """Where approved model versions are served, with the policy that gates them."""

    class Backend(models.TextChoices):
        LOCAL = "local", "Local MLflow model server"
        KSERVE = "kserve", "KServe on Kubernetes"

    name = models.SlugField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    required_approvals = models.PositiveSmallIntegerField(default=1)
    approver_role = models.CharField(
        max_length=16,
        choices=Membership.Role.choices,
        default=Membership.Role.APPROVER,
        help_text="Role (or higher) in the approver team that may approve.",
    )
    approver_team = models.ForeignKey(
        Team,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Team whose members approve; empty means the model's own team.",
    )
    backend = models.CharField(max_length=8, choices=Backend.choices, default=Backend.LOCAL)
    namespace = models.CharField(max_length=63, default="axle")
    kubeconfig_encrypted = models.TextField(blank=True, editable=False)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Deployment(BaseModel):
    """A request to serve one model version in one environment, and its life once approved."""

    class Status(models.TextChoices):
        REQUESTED = "requested", "Requested"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        DEPLOYING = "deploying", "Deploying"
        LIVE = "live", "Live"
        FAILED = "failed", "Failed"
        RETIRED = "retired", "Retired"
        ROLLED_BACK = "rolled_back", "Rolled back"
        WITHDRAWN = "withdrawn", "Withdrawn"

    TRANSITIONS = {
        # Withdrawn: the requester took the request back before anyone decided it.
        Status.REQUESTED: frozenset({Status.APPROVED, Status.REJECTED, Status.WITHDRAWN}),
        Status.APPROVED: frozenset({Status.DEPLOYING, Status.FAILED, Status.RETIRED}),
        Status.DEPLOYING: frozenset({Status.LIVE, Status.FAILED}),
        # Failed: its server died and the reconciler may not start it again (see reconcile.py).
        Status.LIVE: frozenset({Status.RETIRED, Status.ROLLED_BACK, Status.FAILED}),
        # A failed deployment may be tried again; a retired one comes back by rollback.
        Status.FAILED: frozenset({Status.DEPLOYING, Status.RETIRED}),
        Status.RETIRED: frozenset({Status.DEPLOYING}),
        Status.REJECTED: frozenset(),
        Status.ROLLED_BACK: frozenset(),
        Status.WITHDRAWN: frozenset(),
    }
    TERMINAL = frozenset({Status.REJECTED, Status.ROLLED_BACK, Status.WITHDRAWN})
    SERVING = frozenset({Status.DEPLOYING, Status.LIVE})

    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="deployments")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="deployments")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.REQUESTED, db_index=True)
    # Bound at request time: what approvers see is exactly what is served.
    artifact_sha256 = models.CharField(max_length=64)
    # The policy as it stood at request time; the stricter of this and today's applies.
    required_approvals = models.PositiveSmallIntegerField()
    resources = models.JSONField(default=dict, blank=True)
    canary_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    backend_name = models.CharField(max_length=63)
    url = models.CharField(max_length=500, blank=True)
    last_error = models.TextField(blank=True)
    replaces = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    live_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["environment", "status"])]

    def __str__(self) -> str:
        return f"{self.model_version} → {self.environment}"


class DeploymentApproval(BaseModel):
    class Decision(models.TextChoices):
        APPROVE = "approve", "Approve"
        REJECT = "reject", "Reject"

    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="approvals")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=8, choices=Decision.choices)
    comment = models.TextField(blank=True)
    artifact_sha256 = models.CharField(max_length=64, help_text="The artifact this decision was about.")

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["deployment", "approver"], name="approval_one_per_approver"),
        ]

    def __str__(self) -> str:
        return f"{self.approver} {self.decision}d {self.deployment}"
