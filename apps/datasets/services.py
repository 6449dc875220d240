"""Writes for datasets: create one, register a version, checksum it on the cluster, verify it.

The checksum runs on the cluster as the registering user's own account (through their grant),
with no database transaction open while the cluster works: the version is committed as
pending first, then moved to checksumming, measured, and moved to ready or failed."""

from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import dataclass, field
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apps.accounts.models import Team
from apps.accounts.teams import is_team_member, team_asset_create, team_member_require
from apps.audit.services import audit_record
from apps.clusters.models import Cluster
from apps.clusters.selectors import grant_for_submission
from apps.core.errors import Conflict, NotFound, PermissionDenied, Unavailable, ValidationFailed
from apps.core.tasks import enqueue
from apps.core.transitions import transition

from . import remote
from .models import Dataset, DatasetVersion

log = logging.getLogger(__name__)
V = DatasetVersion.Status

URI_RE = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://\S+$")
URI_SCHEMES = {"http", "https", "s3", "gs", "gcs", "az", "abfs", "abfss", "wasbs", "hdfs", "hf", "ftp", "sftp"}


# ---------------------------------------------------------------- datasets


def dataset_create(*, user, team: Team, name: str, description: str = "") -> Dataset:
    team_member_require(user=user, team=team)
    name = (name or "").strip()
    try:
        validate_slug(name)
    except ValidationError:
        raise ValidationFailed("A dataset name uses letters, digits, hyphens and underscores only.") from None
    if len(name) > 64:
        raise ValidationFailed("A dataset name has at most 64 characters.")
    taken = Conflict(f"Team {team.name} already has a dataset named {name}.")
    if Dataset.objects.filter(team=team, name=name).exists():
        raise taken
    return team_asset_create(
        Dataset, user=user, team=team, name=name, description=description, action="dataset.created", taken=taken
    )


# ---------------------------------------------------------------- registering a version


def _clean_path(path: str) -> str:
    path = (path or "").strip()
    if not path.startswith("/"):
        raise ValidationFailed("The path must be absolute, as seen on the cluster's shared filesystem (/…).")
    if "\0" in path or "\n" in path or len(path) > 4000:
        raise ValidationFailed("The path contains characters a cluster path cannot hold, or is too long.")
    # ".." is refused rather than resolved: on the cluster it follows symlinks, here it would not.
    if ".." in path.split("/"):
        raise ValidationFailed("Give the path without “..” components.")
    return posixpath.normpath(path).replace("//", "/")


def _clean_uri(uri: str) -> str:
    uri = (uri or "").strip()
    match = URI_RE.match(uri)
    if not match or len(uri) > 4000:
        raise ValidationFailed("The URI must look like scheme://location, e.g. s3://bucket/prefix or https://….")
    if match["scheme"] not in URI_SCHEMES:
        raise ValidationFailed(
            f"URIs with {match['scheme']}:// are not accepted; use one of {', '.join(sorted(URI_SCHEMES))}, "
            "or a path on a cluster."
        )
    return uri


def dataset_version_register(
    *, user, dataset: Dataset, cluster: Cluster | None = None, path: str | None = None, uri: str | None = None
) -> DatasetVersion:
    """Record a new version and, for a cluster path, queue its checksum on the cluster.

    A URI version is ready at once: the hub does not download data to checksum it."""
    team_member_require(user=user, team=dataset.team)
    if bool(path) == bool(uri):
        raise ValidationFailed("Give either a path on a cluster or a URI.")
    if path:
        path = _clean_path(path)
        if cluster is None:
            raise ValidationFailed("Say which cluster the path is on.")
        grant = grant_for_submission(user=user, cluster=cluster)
        if grant is None:
            raise PermissionDenied(
                f"You have no active grant on cluster {cluster.name}; the checksum runs as your cluster account."
            )
    else:
        uri = _clean_uri(uri)
        if cluster is not None:
            raise ValidationFailed("A URI version is not on a cluster; leave the cluster out.")
    with transaction.atomic():
        # Numbers come from the dataset row's lock: two registrations at once queue here and
        # get consecutive numbers; the unique constraint is the backstop.
        Dataset.objects.select_for_update().filter(pk=dataset.pk).get()
        number = (dataset.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        version = DatasetVersion.objects.create(
            dataset=dataset,
            number=number,
            cluster=cluster if path else None,
            path=path or "",
            uri=uri or "",
            status=V.PENDING if path else V.READY,
            created_by=user,
            cluster_username=grant.cluster_username if path else "",
        )
        audit_record(
            action="dataset_version.registered",
            subject=version,
            actor=user,
            after={
                "dataset": str(dataset.uuid),
                "number": number,
                "status": version.status,
                "cluster": cluster.name if path else None,
                "path": version.path,
                "uri": version.uri,
            },
        )
        if path:
            enqueue("apps.datasets.tasks.dataset_version_checksum", version.pk)
    return version


def _manifest_text(lines: list[bytes]) -> tuple[str, bool]:
    kept = lines[: DatasetVersion.MANIFEST_MAX_LINES]
    return b"".join(line + b"\n" for line in kept).decode("utf-8", "replace"), len(kept) == len(lines)


def _fail(version: DatasetVersion, message: str, *, actor=None) -> DatasetVersion:
    try:
        transition(
            obj=version,
            to=V.FAILED,
            actor=actor,
            transitions=DatasetVersion.TRANSITIONS,
            action="dataset_version.failed",
            fields={"error": message, "checksum_finished_at": timezone.now()},
            data={"error": message},
        )
    except Conflict:
        version.refresh_from_db()
    return version


def dataset_version_checksum(*, version_id: int) -> DatasetVersion | None:
    """Measure a pending version on its cluster. Safe to run twice: only the run that moves
    it from pending to checksumming goes on."""
    version = DatasetVersion.objects.select_related("dataset", "cluster", "created_by").filter(pk=version_id).first()
    if version is None or version.status != V.PENDING:
        return version
    # The task acts for whoever registered the version, also when the rescue queued it again.
    owner = version.created_by
    grant = grant_for_submission(user=owner, cluster=version.cluster)
    if grant is None:
        return _fail(version, f"{owner} no longer holds an active grant on {version.cluster.name}.", actor=owner)
    try:
        transition(
            obj=version,
            to=V.CHECKSUMMING,
            actor=owner,
            transitions=DatasetVersion.TRANSITIONS,
            action="dataset_version.checksumming",
            fields={
                "cluster_username": grant.cluster_username,
                "checksum_started_at": timezone.now(),
                "files_done": 0,
                "bytes_done": 0,
            },
        )
    except Conflict:
        return version  # another worker took it

    # Progress is plain autocommitted UPDATEs, guarded by status: never a transaction held
    # open across cluster calls, and a version that was failed meanwhile is left alone.
    def on_listing(files: int, size: int) -> None:
        DatasetVersion.objects.filter(pk=version.pk, status=V.CHECKSUMMING).update(
            files_total=files, bytes_total=size, updated_at=timezone.now()
        )

    def on_progress(files: int, size: int) -> None:
        DatasetVersion.objects.filter(pk=version.pk, status=V.CHECKSUMMING).update(
            files_done=files, bytes_done=size, updated_at=timezone.now()
        )

    try:
        measured = remote.measure(grant, version.path, on_listing=on_listing, on_progress=on_progress)
    except remote.MeasureFailed as exc:
        version.refresh_from_db()
        return _fail(version, exc.message, actor=owner)
    manifest, complete = _manifest_text(measured.lines)
    version.refresh_from_db()
    try:
        transition(
            obj=version,
            to=V.READY,
            actor=owner,
            transitions=DatasetVersion.TRANSITIONS,
            action="dataset_version.ready",
            fields={
                "size_bytes": measured.size_bytes,
                "file_count": measured.file_count,
                "checksum": measured.checksum,
                "manifest": manifest,
                "manifest_complete": complete,
                "files_total": measured.file_count,
                "bytes_total": measured.size_bytes,
                "files_done": measured.file_count,
                "bytes_done": measured.size_bytes,
                "checksum_finished_at": timezone.now(),
            },
            data={"checksum": measured.checksum, "size_bytes": measured.size_bytes, "file_count": measured.file_count},
        )
    except Conflict:
        version.refresh_from_db()
    return version


# ---------------------------------------------------------------- verification


@dataclass
class Verification:
    """Whether a ready version's content on the cluster still has its recorded checksum.

    Truthy when it matches, so ``if not dataset_version_verify(...)`` reads naturally."""

    matches: bool
    message: str
    checksum: str = ""
    size_bytes: int | None = None
    file_count: int | None = None
    differences: list[str] = field(default_factory=list)
    skipped: bool = False

    def __bool__(self) -> bool:
        return self.matches


def _differences(recorded: str, lines: list[bytes], complete: bool, limit: int = 20) -> list[str]:
    before = remote.manifest_names([line.encode() for line in recorded.splitlines()])
    now = remote.manifest_names(lines)
    found = [f"changed: {name}" for name, digest in before.items() if name in now and now[name] != digest]
    found += [f"missing: {name}" for name in before if name not in now]
    if complete:
        found += [f"added: {name}" for name in now if name not in before]
    return sorted(found)[:limit]


def dataset_version_verify(*, version: DatasetVersion, user) -> Verification:
    """Checksum a ready version again, now, as ``user``'s cluster account, and compare.

    Runs in the caller's thread and talks to the cluster: never call it inside a transaction.
    Raises Unavailable when the cluster cannot be reached, since then nothing is known."""
    if not is_team_member(user=user, team=version.dataset.team):
        raise NotFound("No such dataset version.")
    if version.status != V.READY:
        raise Conflict(
            f"Version {version.number} of {version.dataset.name} is {version.status}; "
            "only a ready version can be verified."
        )
    if version.uri:
        return Verification(
            matches=True,
            skipped=True,
            message=f"{version.uri} is a URI; the hub keeps no checksum of it, so there is nothing to verify.",
        )
    grant = grant_for_submission(user=user, cluster=version.cluster)
    if grant is None:
        raise PermissionDenied(f"You have no active grant on cluster {version.cluster.name}.")
    try:
        measured = remote.measure(grant, version.path)
    except remote.MeasureFailed as exc:
        if exc.transient:
            raise Unavailable(exc.message) from None
        result = Verification(matches=False, message=exc.message)
    else:
        matches = measured.checksum == version.checksum
        result = Verification(
            matches=matches,
            checksum=measured.checksum,
            size_bytes=measured.size_bytes,
            file_count=measured.file_count,
            message=(
                f"{version.dataset.name}@{version.number} still has checksum {version.checksum[:12]}…"
                if matches
                else f"{version.dataset.name}@{version.number} changed on {version.cluster.name}: checksum is now "
                f"{measured.checksum[:12]}…, was {version.checksum[:12]}…"
            ),
            differences=[] if matches else _differences(version.manifest, measured.lines, version.manifest_complete),
        )
    with transaction.atomic():
        audit_record(
            action="dataset_version.verified",
            subject=version,
            actor=user,
            after={
                "matches": result.matches,
                "checksum": result.checksum,
                "message": result.message,
                "cluster_username": grant.cluster_username,
            },
        )
    return result


# ---------------------------------------------------------------- rescue


PENDING_RESEND_AFTER = timedelta(minutes=5)
STALE_GRACE = timedelta(minutes=10)


def dataset_versions_rescue() -> dict[str, int]:
    """Pick up versions a worker dropped. A pending version whose task was lost is queued again
    (the task is safe to run twice). A checksumming version whose worker died is failed with a
    reason, once no progress for longer than its current hashing call could take: each call
    hashes at most the bytes still to do and gives up at SLOWEST_HASH_RATE, so a slow big file
    is not mistaken for a dead worker."""
    now = timezone.now()
    resent = failed = 0
    for pk in DatasetVersion.objects.filter(status=V.PENDING, updated_at__lt=now - PENDING_RESEND_AFTER).values_list(
        "pk", flat=True
    ):
        enqueue("apps.datasets.tasks.dataset_version_checksum", pk)
        resent += 1
    for version in DatasetVersion.objects.filter(status=V.CHECKSUMMING, updated_at__lt=now - STALE_GRACE).defer(
        "manifest"
    ):
        remaining = max((version.bytes_total or 0) - version.bytes_done, 0)
        allowed = STALE_GRACE + timedelta(seconds=max(120.0, remaining / remote.SLOWEST_HASH_RATE))
        if version.updated_at < now - allowed:
            _fail(
                version,
                f"The worker checksumming this version stopped (no progress since "
                f"{version.updated_at:%Y-%m-%d %H:%M} UTC); register the path again.",
            )
            failed += 1
    return {"resent": resent, "failed": failed}
