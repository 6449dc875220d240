"""django-q2 entry points of the usage app."""

from datetime import timedelta

from apps.core.leases import acquire_lease, release_lease

from . import services


def usage_collect_all() -> str:
    """Every cluster's accounting since the last read; one run at a time."""
    if not acquire_lease("usage.collect", timedelta(minutes=30)):
        return "another collection is running"
    try:
        results = services.usage_collect_all()
    finally:
        release_lease("usage.collect")
    return "; ".join(
        f"{r.cluster}: {r.rows} rows in {r.calls} call(s)" + (" with errors" if r.errors else "") for r in results
    )
