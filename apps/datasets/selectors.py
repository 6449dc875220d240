"""Reads for datasets. A user sees the datasets of the teams they belong to, nothing else."""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.db.models import QuerySet

from apps.accounts.teams import team_asset_list, team_owned, team_owned_get
from apps.clusters.models import Cluster
from apps.core.errors import NotFound, ValidationFailed
from apps.core.models import parse_uuid

from .models import Dataset, DatasetVersion

V = DatasetVersion.Status
VERSION = {"via": "dataset__team", "related": ("dataset__team", "cluster", "created_by")}


def dataset_list(*, user, team: str = "", q: str = "") -> QuerySet[Dataset]:
    return team_asset_list(Dataset.objects.all(), user=user, team=team, q=q, order_by=("team__name", "name"))


def dataset_get(*, user, id) -> Dataset:
    return team_owned_get(Dataset.objects.filter(uuid=parse_uuid(id)), user=user, missing="No such dataset.")


def dataset_version_list(*, user, dataset: Dataset) -> QuerySet[DatasetVersion]:
    """A dataset's versions, newest first, without their manifests (which may be large)."""
    return (
        team_owned(DatasetVersion.objects.filter(dataset=dataset), user=user, via="dataset__team")
        .select_related("cluster", "created_by", "dataset")
        .defer("manifest")
        .order_by("-number")
    )


def dataset_version_get(*, user, id) -> DatasetVersion:
    return team_owned_get(
        DatasetVersion.objects.filter(uuid=parse_uuid(id)), user=user, missing="No such dataset version.", **VERSION
    )


def dataset_version_by_number(*, user, dataset: Dataset, number: int) -> DatasetVersion:
    return team_owned_get(
        DatasetVersion.objects.filter(dataset=dataset, number=number),
        user=user,
        missing=f"Dataset {dataset.name} has no version {number}.",
        **VERSION,
    )


def env_name(dataset: Dataset) -> str:
    """The environment variable a job reads the dataset's location from: AXLE_DATASET_<NAME>."""
    return "AXLE_DATASET_" + re.sub(r"[^A-Z0-9]", "_", dataset.name.upper())


def dataset_env(versions: Iterable[DatasetVersion]) -> dict[str, str]:
    """{AXLE_DATASET_<NAME>: path or uri} for a job's declared inputs."""
    return {env_name(v.dataset): v.path or v.uri for v in versions}


def dataset_versions_for_job(user, ids, cluster: Cluster | None = None) -> list[DatasetVersion]:
    """The versions a job declares as inputs, in the order given: each must be one the user may
    see, ready, and (for a path) on the job's cluster. Raises ValidationFailed naming every
    problem at once, with the list under ``problems``."""
    ids = list(ids or [])
    wanted = [parse_uuid(i) for i in ids]
    found = {
        v.uuid: v
        for v in team_owned(
            DatasetVersion.objects.filter(uuid__in=[u for u in wanted if u]), user=user, via="dataset__team"
        ).select_related("dataset__team", "cluster")
    }
    problems, versions, names, missing = [], [], {}, 0
    for raw, u in zip(ids, wanted, strict=True):
        version = found.get(u) if u else None
        if version is None:
            problems.append(f"Dataset version {raw} does not exist or is not one of your teams'.")
            missing += 1
            continue
        label = f"{version.dataset.name}@{version.number}"
        if version.status != V.READY:
            problems.append(
                f"{label} is {version.status}, not ready"
                + (f": {version.error}" if version.error else "; wait for its checksum.")
            )
        if cluster is not None and version.cluster_id is not None and version.cluster_id != cluster.pk:
            problems.append(f"{label} is on cluster {version.cluster.name}, not on {cluster.name}.")
        name = env_name(version.dataset)
        if name in names:
            problems.append(f"{label} and {names[name]} would both be {name}; declare one version per dataset.")
        names[name] = label
        versions.append(version)
    if problems:
        # Ids that name nothing the user may see answer as any unknown id does (404).
        error = NotFound if missing == len(problems) else ValidationFailed
        raise error("Dataset inputs: " + " ".join(problems), extra={"problems": problems})
    return versions
