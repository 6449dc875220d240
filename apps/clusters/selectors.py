import uuid

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
            cluster = qs.filter(uuid=uuid.UUID(str(ident))).first()
        except ValueError:  # not a uuid either
            cluster = None
    if cluster is None:
        raise NotFound(f"No cluster {ident!r}.")
    return cluster


def grant_for_submission(*, user, cluster: Cluster) -> ClusterGrant | None:
    return grant_usable_list(user=user).filter(cluster=cluster).first()


def grant_for_submission_to(*, user, ident: str) -> ClusterGrant | None:
    """`grant_for_submission` on the cluster `cluster_get` finds by `ident` (its name, else its
    public id), with its cluster, in one query for a name: None when the user has no usable
    grant there (the caller tells a missing cluster from a missing grant with `cluster_get`)."""
    grant = grant_usable_list(user=user).filter(cluster__name=ident).first()
    if grant is None:
        try:
            grant = grant_usable_list(user=user).filter(cluster__uuid=uuid.UUID(str(ident))).first()
        except ValueError:  # not a uuid either
            return None
    return grant


def grant_for_health_check(*, cluster: Cluster) -> ClusterGrant | None:
    """One usable grant whose credentials can reach the cluster over its transport.

    The oldest such grant is used, so checks keep going through the same account."""
    grants = (
        ClusterGrant.objects.filter(cluster=cluster, status=ClusterGrant.Status.ACTIVE)
        .exclude(cluster_username="")
        .filter(Q(valid_until__isnull=True) | Q(valid_until__gt=timezone.now()))
        .select_related("cluster")
        .order_by("created_at", "pk")
    )
    if cluster.transport == Cluster.Transport.REST:
        live_token = Q(rest_token_encrypted__gt="") & (
            Q(rest_token_expires_at__isnull=True) | Q(rest_token_expires_at__gt=timezone.now())
        )
        # The cluster's JWT signing key mints a token for any grant's username.
        return grants.filter(live_token).first() or (grants.first() if cluster.jwt_key_encrypted else None)
    return grants.exclude(ssh_private_key_encrypted="").first()


def grant_mine_by_cluster(*, user) -> dict[int, ClusterGrant]:
    """The grant that matters to a user on each cluster (active, else requested, else the latest
    decided one), in one query."""
    rank = {ClusterGrant.Status.ACTIVE: 0, ClusterGrant.Status.REQUESTED: 1}
    mine: dict[int, ClusterGrant] = {}
    for grant in ClusterGrant.objects.filter(user=user).select_related("cluster").order_by("-created_at"):
        best = mine.get(grant.cluster_id)
        if best is None or rank.get(grant.status, 2) < rank.get(best.status, 2):
            mine[grant.cluster_id] = grant
    return mine


def grant_requests_pending(*, user) -> QuerySet[ClusterGrant]:
    """Access requests waiting for an administrator, oldest first: for those who may decide
    them (staff allowed to change grants), nothing for anyone else."""
    if not (user.is_active and user.is_staff and user.has_perm("clusters.change_clustergrant")):
        return ClusterGrant.objects.none()
    return (
        ClusterGrant.objects.filter(status=ClusterGrant.Status.REQUESTED)
        .select_related("user", "cluster")
        .order_by("created_at")
    )
