from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from apps.accounts.models import Team
from apps.clusters.models import Cluster
from apps.core.models import BaseModel


class Dataset(BaseModel):
    """A team's named collection of immutable, numbered versions."""

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="datasets")
    name = models.SlugField(max_length=64)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["team__name", "name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="dataset_unique_team_name")]

    def __str__(self) -> str:
        return f"{self.team.name}/{self.name}"


class DatasetVersion(BaseModel):
    """One registered location (a path on a cluster's shared filesystem, or a URI) with what
    the hub measured there: size, file count and a content checksum computed on the cluster.

    The manifest (one ``sha256  relative/path`` line per file, sorted by path bytes) is kept in
    full up to MANIFEST_MAX_LINES lines and cut there beyond: a million-file dataset would make
    a 100 MB row that every read of the version drags along, while the checksum over the full
    manifest already pins the content. The stored part lets a failed verification name the
    files that changed."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        CHECKSUMMING = "checksumming", "Checksumming"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    TERMINAL = frozenset({Status.READY, Status.FAILED})
    TRANSITIONS = {
        Status.PENDING: frozenset({Status.CHECKSUMMING, Status.FAILED}),
        Status.CHECKSUMMING: frozenset({Status.READY, Status.FAILED}),
        Status.READY: frozenset(),
        Status.FAILED: frozenset(),
    }
    MANIFEST_MAX_LINES = 10_000
    # What a version *is*: never changes once it is ready.
    IMMUTABLE_FIELDS = (
        "dataset_id",
        "number",
        "cluster_id",
        "path",
        "uri",
        "size_bytes",
        "file_count",
        "checksum",
        "manifest",
        "manifest_complete",
        "created_by_id",
    )

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    cluster = models.ForeignKey(Cluster, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    path = models.CharField(max_length=4096, blank=True, help_text="Absolute path on the cluster's shared filesystem.")
    uri = models.CharField(max_length=4096, blank=True, help_text="s3://, https://, … for data not on a cluster.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)

    size_bytes = models.BigIntegerField(null=True, blank=True)
    file_count = models.BigIntegerField(null=True, blank=True)
    checksum = models.CharField(max_length=64, blank=True, help_text="sha256 of the manifest.")
    manifest = models.TextField(blank=True)
    manifest_complete = models.BooleanField(default=False)

    files_done = models.BigIntegerField(default=0)
    files_total = models.BigIntegerField(null=True, blank=True)
    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    cluster_username = models.CharField(max_length=64, blank=True, help_text="The account the checksum ran as.")
    checksum_started_at = models.DateTimeField(null=True, blank=True)
    checksum_finished_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["dataset", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="datasetversion_unique_number"),
            models.CheckConstraint(
                condition=(models.Q(path="") & ~models.Q(uri="") & models.Q(cluster__isnull=True))
                | (~models.Q(path="") & models.Q(uri="") & models.Q(cluster__isnull=False)),
                name="datasetversion_path_xor_uri",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name}@{self.number}"

    @property
    def location(self) -> str:
        return self.uri or f"{self.cluster.name}:{self.path}"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def progress_percent(self) -> int:
        if self.bytes_total:
            return min(100, int(100 * self.bytes_done / self.bytes_total))
        if self.files_total:
            return min(100, int(100 * self.files_done / self.files_total))
        return 100 if self.status == self.Status.READY else 0

    def clean(self) -> None:
        if bool(self.path) == bool(self.uri):
            raise ValidationError("A version is either a path on a cluster or a URI, not both or neither.")
        if self.path and self.cluster_id is None:
            raise ValidationError("A path needs the cluster it lives on.")
        if self.pk is None:
            return
        stored = type(self).objects.filter(pk=self.pk).values("status", *self.IMMUTABLE_FIELDS).first()
        if stored and stored["status"] == self.Status.READY:
            changed = [f for f in self.IMMUTABLE_FIELDS if getattr(self, f) != stored[f]]
            if changed or self.status != stored["status"]:
                raise ValidationError(
                    f"Version {self.number} is ready and cannot change ({', '.join(changed) or 'status'}); "
                    "register a new version instead."
                )
