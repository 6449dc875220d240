"""The real local cluster of compose/local, as Django rows, for tests that talk to it.

compose/local/stack.sh describes the cluster in /var/lib/axle/cluster.env once it is up.
Tests call `local_cluster_env()` and skip when it answers None:

    env = local_cluster_env()
    if env is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    cluster = make_local_cluster("ssh", "local-ssh")
    grant = make_local_grant(cluster, alice)

No pytest fixtures here on purpose: the module is plain functions any suite can call.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

CLUSTER_ENV = Path(os.environ.get("AXLE_LOCAL_CLUSTER_ENV", "/var/lib/axle/cluster.env"))
LOCAL_CLUSTER_MISSING = (
    f"{CLUSTER_ENV} is missing: the local Slurm cluster is not up (start it with compose/local/stack.sh up)"
)


def _read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        words = shlex.split(value) if value else [""]
        env[key.strip()] = words[0] if words else ""
    return env


def local_cluster_env() -> dict[str, str] | None:
    """What cluster.env says, or None when the local cluster is not up."""
    if not CLUSTER_ENV.exists():
        return None
    return _read_env_file(CLUSTER_ENV)


def _require_env() -> dict[str, str]:
    env = local_cluster_env()
    if env is None:
        raise RuntimeError(LOCAL_CLUSTER_MISSING)
    return env


def local_host_key(env: dict[str, str] | None = None) -> str:
    """The login node's public host key ('ssh-ed25519 AAAA…'), without the known_hosts host field."""
    env = env or _require_env()
    known = env.get("AXLE_LOCAL_SSH_KNOWN_HOSTS", "")
    text = Path(known).read_text() if known and Path(known).exists() else known
    keys = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and not line.lstrip().startswith(("#", "@")):
            keys.append(" ".join(words[1:3]))
    if not keys:
        raise RuntimeError(f"No host key in AXLE_LOCAL_SSH_KNOWN_HOSTS={known!r}")
    return "\n".join(keys)


def local_private_key(username: str = "scientist", env: dict[str, str] | None = None) -> str:
    env = env or _require_env()
    return (Path(env["AXLE_LOCAL_KEYS_DIR"]) / username / "id_ed25519").read_text()


def make_local_cluster(transport: str, name: str):
    """A Cluster row for the local cluster over `transport` ('ssh' or 'rest'), its host key
    pinned and, for rest, the cluster-level JWT signing key set. Goes through the services,
    so the audit trail looks like an administrator's."""
    from django.conf import settings

    from apps.clusters import services
    from apps.clusters.models import Cluster
    from apps.integrations.slurm.ssh import PinnedHostKey

    env = _require_env()
    scratch = env.get("AXLE_LOCAL_SCRATCH_ROOT", "/var/lib/axle/cluster/scratch").rstrip("/")
    cluster, _ = Cluster.objects.update_or_create(
        name=name,
        defaults={
            "description": f"The local one-node Slurm cluster over {transport}",
            "transport": transport,
            "is_active": True,
            "login_host": env.get("AXLE_LOCAL_SSH_HOST", "127.0.0.1"),
            "login_port": int(env.get("AXLE_LOCAL_SSH_PORT", "2222")),
            "rest_url": env.get("AXLE_LOCAL_REST_URL", "http://127.0.0.1:6820"),
            "rest_api_version": env.get("AXLE_LOCAL_REST_API_VERSION", "v0.0.38"),
            "job_root": f"{scratch}/{{username}}/axle-jobs",
            # Compute nodes are this machine, so they see MLflow where the hub does.
            "mlflow_tracking_uri": env.get("AXLE_LOCAL_MLFLOW_URI") or settings.AXLE_MLFLOW_TRACKING_URI,
        },
    )
    host_key = local_host_key(env)
    # The stack printed the fingerprint with ssh-keygen: that is the out-of-band confirmation.
    confirmed = env.get("AXLE_LOCAL_SSH_HOST_FINGERPRINT") or min(PinnedHostKey.parse(host_key).fingerprints)
    services.cluster_set_host_key(cluster=cluster, host_key=host_key, confirmed_fingerprint=confirmed, actor=None)
    if transport == Cluster.Transport.REST:
        key = Path(env["AXLE_LOCAL_JWT_KEY_FILE"]).read_bytes()
        services.cluster_set_jwt_key(cluster=cluster, key=key, actor=None)
    cluster.refresh_from_db()
    return cluster


def make_local_grant(cluster, user, cluster_username: str = "scientist", **limits):
    """An active grant for `user` on `cluster` as `cluster_username`, holding that account's
    key from the keys folder (used over SSH, and by the rest transport to read logs)."""
    from apps.clusters import services

    limits.setdefault("allowed_partitions", ["debug"])
    grant = services.grant_create(
        user=user,
        cluster=cluster,
        cluster_username=cluster_username,
        actor=None,
        **limits,
    )
    services.grant_set_ssh_key(grant=grant, private_key=local_private_key(cluster_username), actor=None)
    grant.refresh_from_db()
    return grant
