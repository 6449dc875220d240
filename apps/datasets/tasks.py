"""Background work for datasets: thin wrappers that fetch by id and call one service."""

from . import services


def dataset_version_checksum(version_id: int) -> None:
    services.dataset_version_checksum(version_id=version_id)


def dataset_versions_rescue() -> dict[str, int]:
    return services.dataset_versions_rescue()
