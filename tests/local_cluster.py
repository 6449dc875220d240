"""The real local cluster of compose/local, as Django rows, for tests that talk to it.

compose/local/stack.sh describes the cluster in /var/lib/axle/cluster.env once it is up.
Tests call `local_cluster_env()` and skip when it answers None:

    env = local_cluster_env()
    if env is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    cluster = make_local_cluster("ssh", "local-ssh")
    grant = make_local_grant(cluster, alice)

The rows are made by the same code that registers the demo clusters (apps/clusters/local.py),
through the services, so the audit trail looks like an administrator's. Unlike the demo,
a test always gets a fresh grant with the limits it asks for."""

from __future__ import annotations

import os
from pathlib import Path

CLUSTER_ENV = Path(os.environ.get("AXLE_LOCAL_CLUSTER_ENV", "/var/lib/axle/cluster.env"))
LOCAL_CLUSTER_MISSING = (
    f"{CLUSTER_ENV} is missing: the local Slurm cluster is not up (start it with compose/local/stack.sh up)"
)


def local_cluster_env() -> dict[str, str] | None:
    """What cluster.env says, or None when the local cluster is not up."""
    from apps.clusters.local import read_cluster_env

    return read_cluster_env(CLUSTER_ENV)


def _require_env() -> dict[str, str]:
    env = local_cluster_env()
    if env is None:
        raise RuntimeError(LOCAL_CLUSTER_MISSING)
    return env


def local_host_key(env: dict[str, str] | None = None) -> str:
    """The login node's public host key ('ssh-ed25519 AAAA…'), without the known_hosts host field."""
    from apps.clusters.local import host_key_from_known_hosts

    return host_key_from_known_hosts((env or _require_env())["AXLE_LOCAL_SSH_KNOWN_HOSTS"])


def local_private_key(username: str = "scientist", env: dict[str, str] | None = None) -> str:
    env = env or _require_env()
    return (Path(env["AXLE_LOCAL_KEYS_DIR"]) / username / "id_ed25519").read_text()


def make_local_cluster(transport: str, name: str):
    """A Cluster row for the local cluster over `transport` ('ssh' or 'rest'), its host key
    pinned and, for rest, the cluster-level JWT signing key set."""
    from apps.clusters.local import register_local_cluster

    return register_local_cluster(env=_require_env(), transport=transport, name=name)


def make_local_grant(cluster, user, cluster_username: str = "scientist", **limits):
    """A fresh active grant for `user` on `cluster` as `cluster_username`, holding that
    account's key from the keys folder (used over SSH, and by the rest transport to read logs)."""
    from apps.clusters import services

    limits.setdefault("allowed_partitions", ["debug"])
    grant = services.grant_create(user=user, cluster=cluster, cluster_username=cluster_username, actor=None, **limits)
    services.grant_set_ssh_key(grant=grant, private_key=local_private_key(cluster_username), actor=None)
    if not cluster.state:
        # Jobs are checked against the cluster's configuration: read it as the health check does.
        from apps.clusters.tasks import cluster_refresh_health

        cluster_refresh_health(cluster.pk)
    grant.refresh_from_db()
    return grant
