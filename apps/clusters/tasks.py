"""Cluster health: one sinfo-style read per cluster, outside any database transaction.

`cluster_refresh_all` runs every minute from a django-q2 Schedule (see
apps/clusters/schedules.py and `manage.py setup_schedules`); it queues one
`cluster_refresh_health` per active cluster so one slow or dead cluster never delays the others."""

import logging

from apps.core.tasks import enqueue
from apps.integrations.slurm.base import HostKeyError, SlurmError

from . import selectors, services
from .models import Cluster
from .transport import slurm_client

log = logging.getLogger(__name__)

NO_GRANT = (
    "No active grant with credentials to check this cluster with: health is read as one of its users. "
    "Approve a grant and give it {what}."
)


def cluster_refresh_all() -> int:
    """Queue a health check of every active cluster; return how many were queued."""
    ids = list(Cluster.objects.filter(is_active=True).values_list("pk", flat=True))
    for cluster_id in ids:
        enqueue("apps.clusters.tasks.cluster_refresh_health", cluster_id)
    return len(ids)


def cluster_refresh_health(cluster_id: int) -> Cluster | None:
    """Read the cluster's partitions and nodes once and record its health. Safe to run twice."""
    cluster = Cluster.objects.filter(pk=cluster_id, is_active=True).first()
    if cluster is None:
        return None
    grant = selectors.grant_for_health_check(cluster=cluster)
    if grant is None:
        what = (
            "an SSH key"
            if cluster.transport == Cluster.Transport.SSH
            else "a slurmrestd token (or set the cluster's JWT key)"
        )
        return services.cluster_record_health(cluster_id=cluster.pk, reachable=None, error=NO_GRANT.format(what=what))

    # Talking to the cluster may take seconds or time out: never while holding a transaction,
    # so the read happens here and the result is stored in its own short one.
    try:
        with slurm_client(grant) as client:
            state = client.cluster_state()
    except HostKeyError as exc:
        # Said as it is: a changed key needs an administrator, not a retry.
        return services.cluster_record_health(cluster_id=cluster.pk, reachable=False, error=f"Host key refused: {exc}")
    except SlurmError as exc:
        return services.cluster_record_health(cluster_id=cluster.pk, reachable=False, error=str(exc))
    except Exception as exc:
        # A bug or an unexpected library error must still show on the cluster page, not only in the worker log.
        log.exception("health check of cluster %s failed unexpectedly", cluster.name)
        return services.cluster_record_health(
            cluster_id=cluster.pk,
            reachable=False,
            error=f"Unexpected error while reading the cluster: {type(exc).__name__}",
        )
    return services.cluster_record_health(cluster_id=cluster.pk, reachable=True, state=state)
