import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models

from apps.core.models import BaseModel


class User(AbstractUser):
    class Directory(models.TextChoices):
        LOCAL = "local", "Local account"
        LDAP = "ldap", "LDAP"
        OIDC = "oidc", "OpenID Connect"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Where the account comes from; a directory's accounts get their teams from its groups.
    directory = models.CharField(max_length=8, choices=Directory.choices, default=Directory.LOCAL, editable=False)
    directory_uid = models.CharField(
        max_length=150,
        blank=True,
        editable=False,
        help_text="The directory's username (LDAP uid): on HPC sites, also the cluster account.",
    )

    @property
    def is_platform_admin(self) -> bool:
        return self.is_staff or self.is_superuser


class Team(BaseModel):
    name = models.SlugField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="teams")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(BaseModel):
    class Role(models.TextChoices):
        MEMBER = "member", "Member"
        APPROVER = "approver", "Approver"
        ADMIN = "admin", "Admin"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="membership_unique_user_team")]
        ordering = ["team__name", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class ApiToken(BaseModel):
    """A personal API token. Only a hash of the key is stored; the key is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The first characters of the key, to tell tokens apart.")
    key_hash = models.CharField(max_length=64, unique=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
