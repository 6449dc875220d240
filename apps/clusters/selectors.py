from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.core.errors import NotFound

from .models import Cluster, ClusterGrant


def grant_list(*, user) -> QuerySet[ClusterGrant]:
    return ClusterGrant.objects.filter(user=user).select_related("cluster").order_by("cluster__name", "-created_at")


def grant_usable_list(*, user) -> QuerySet[ClusterGrant]:
    """Grants a user can submit with right now."""
    return (
        ClusterGrant.objects.filter(user=user, status=ClusterGrant.Status.ACTIVE, cluster__is_active=True)
        .exclude(cluster_username="")
        .filter(Q(valid_until__isnull=True) | Q(valid_until__gt=timezone.now()))
        .select_related("cluster")
    )


def cluster_list(*, user) -> QuerySet[Cluster]:
    """Clusters a user may see: active ones (to request access) and any they hold a grant on."""
    if user.is_staff or user.is_superuser:
        return Cluster.objects.all()
    return Cluster.objects.filter(Q(is_active=True) | Q(grants__user=user)).distinct()


def cluster_get(*, user, ident: str) -> Cluster:
    """A cluster by public id or name."""
    qs = cluster_list(user=user)
    cluster = qs.filter(name=ident).first()
    if cluster is None:
        try:
            cluster = qs.filter(uuid=ident).first()
        except Exception:  # not a uuid
            cluster = None
    if cluster is None:
        raise NotFound(f"No cluster {ident!r}.")
    return cluster


def grant_for_submission(*, user, cluster: Cluster) -> ClusterGrant | None:
    return grant_usable_list(user=user).filter(cluster=cluster).first()
