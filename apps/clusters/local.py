"""Register the one-host cluster from compose/local (described by its cluster.env) as hub
rows: used by `./dev up`'s demo data and by the tests that talk to the real cluster."""

import os
import shlex
from pathlib import Path

from django.conf import settings
from django.db import transaction

from apps.integrations.slurm.ssh import PinnedHostKey

from . import services
from .models import Cluster, ClusterGrant

# Root keeps the cluster users' SSH keys and Slurm's JWT key; `./dev up` hands the hub's user
# a copy for the seeding commands only, and says where in the environment.
HANDED_OVER = ("AXLE_LOCAL_KEYS_DIR", "AXLE_LOCAL_JWT_KEY_FILE")


def read_cluster_env(path: Path) -> dict[str, str] | None:
    if not path.exists():
        return None
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        words = shlex.split(value) if value else [""]
        env[key.strip()] = words[0] if words else ""
    env.update({key: os.environ[key] for key in HANDED_OVER if os.environ.get(key)})
    return env


def host_key_from_known_hosts(path: str) -> str:
    keys = []
    for line in Path(path).read_text().splitlines():
        words = line.split()
        if len(words) >= 3 and not line.lstrip().startswith(("#", "@")):
            keys.append(" ".join(words[1:3]))
    if not keys:
        raise ValueError(f"No host key in {path}")
    return "\n".join(keys)


def register_local_cluster(*, env: dict[str, str], transport: str, name: str, actor=None) -> Cluster:
    scratch = env.get("AXLE_LOCAL_SCRATCH_ROOT", "/var/lib/axle/cluster/scratch").rstrip("/")
    with transaction.atomic():
        cluster, _ = Cluster.objects.update_or_create(
            name=name,
            defaults={
                "description": f"The local one-node Slurm cluster, reached over {transport}",
                "transport": transport,
                "is_active": True,
                "login_host": env.get("AXLE_LOCAL_SSH_HOST", "127.0.0.1"),
                "login_port": int(env.get("AXLE_LOCAL_SSH_PORT", "2222")),
                "rest_url": env.get("AXLE_LOCAL_REST_URL", "http://127.0.0.1:6820"),
                "rest_api_version": env.get("AXLE_LOCAL_REST_API_VERSION", "v0.0.38"),
                "job_root": f"{scratch}/{{username}}/axle-jobs",
                # A second site on the host has its commands in a folder of its own.
                "slurm_bin_dir": env.get("AXLE_LOCAL_SLURM_BIN_DIR") or "/usr/bin",
                # The compute node is this machine: it sees MLflow where the hub does.
                "mlflow_tracking_uri": env.get("AXLE_MLFLOW_TRACKING_URI") or settings.AXLE_MLFLOW_TRACKING_URI,
            },
        )
    host_key = host_key_from_known_hosts(env["AXLE_LOCAL_SSH_KNOWN_HOSTS"])
    # The stack printed the fingerprint with ssh-keygen when it made the key: that is the
    # out-of-band confirmation an administrator would otherwise give.
    confirmed = env.get("AXLE_LOCAL_SSH_HOST_FINGERPRINT") or min(PinnedHostKey.parse(host_key).fingerprints)
    if cluster.host_key != host_key:
        services.cluster_set_host_key(cluster=cluster, host_key=host_key, confirmed_fingerprint=confirmed, actor=actor)
    if transport == Cluster.Transport.REST and not cluster.has_jwt_key:
        services.cluster_set_jwt_key(
            cluster=cluster, key=Path(env["AXLE_LOCAL_JWT_KEY_FILE"]).read_bytes(), actor=actor
        )
    cluster.refresh_from_db()
    return cluster


def grant_local(
    *, env: dict[str, str], cluster: Cluster, user, cluster_username: str, actor=None, **limits
) -> ClusterGrant:
    """An active grant holding the hub's key for ``cluster_username`` (idempotent)."""
    grant = ClusterGrant.objects.filter(user=user, cluster=cluster, status=ClusterGrant.Status.ACTIVE).first()
    if grant is None:
        grant = services.grant_create(
            user=user, cluster=cluster, cluster_username=cluster_username, actor=actor, **limits
        )
    elif limits:
        # Seeding again brings an older demo grant to today's limits (audited; nothing when equal).
        grant = services.grant_update_limits(grant=grant, actor=actor, **limits)
    if not grant.has_ssh_key:
        key = (Path(env["AXLE_LOCAL_KEYS_DIR"]) / cluster_username / "id_ed25519").read_text()
        services.grant_set_ssh_key(grant=grant, private_key=key, actor=actor)
    grant.refresh_from_db()
    return grant
