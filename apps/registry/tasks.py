"""Background work for the registry: fetch by id, call one service; safe to run twice."""

from datetime import timedelta

from apps.core.leases import acquire_lease, release_lease

from . import services


def model_version_register_from_job(job_id: int):
    services.model_version_register_from_job(job_id=job_id)


def model_versions_register_pending():
    """Every few minutes: automatic registrations an MLflow outage left undone. A lease keeps
    two rounds from registering the same job in MLflow at once."""
    if not acquire_lease("registry-register-pending", timedelta(minutes=10)):
        return "another round holds the lease"
    try:
        return services.model_versions_register_pending()
    finally:
        release_lease("registry-register-pending")
