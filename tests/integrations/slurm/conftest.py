"""Shared fixtures for the Slurm client tests.

The contract suite runs against the local cluster of compose/local, which describes
itself in /var/lib/axle/cluster.env once `compose/local/stack.sh up` has finished.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# These tests need no Django; with `-p no:django` nothing puts the repository on the path.
ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from apps.integrations.slurm.base import JobInfo, SlurmClient  # noqa: E402
from apps.integrations.slurm.rest import RestClient  # noqa: E402
from apps.integrations.slurm.ssh import SSHClient  # noqa: E402

CLUSTER_ENV = Path(os.environ.get("AXLE_LOCAL_CLUSTER_ENV", "/var/lib/axle/cluster.env"))
USER = "scientist"


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        line = line.removeprefix("export ")
        key, _, value = line.partition("=")
        words = shlex.split(value) if value else [""]
        env[key.strip()] = words[0] if words else ""
    return env


@pytest.fixture(scope="session")
def cluster() -> dict[str, str]:
    if not CLUSTER_ENV.exists():
        pytest.skip(
            f"{CLUSTER_ENV} is missing: the local Slurm cluster is not up (start it with compose/local/stack.sh up)"
        )
    return read_env_file(CLUSTER_ENV)


def _host_key(cluster: dict[str, str]) -> str:
    known = cluster.get("AXLE_LOCAL_SSH_KNOWN_HOSTS", "")
    if known and Path(known).exists():
        return Path(known).read_text()
    if known and " " in known:  # the line itself rather than a file
        return known
    return cluster["AXLE_LOCAL_SSH_HOST_FINGERPRINT"]


def private_key(cluster: dict[str, str], user: str = USER) -> str:
    return (Path(cluster["AXLE_LOCAL_KEYS_DIR"]) / user / "id_ed25519").read_text()


@pytest.fixture(scope="session")
def ssh_factory(cluster: dict[str, str]) -> Callable[..., SSHClient]:
    def make(user: str = USER, host_key: str | None = None, slurm_bin_dir: str = "/usr/bin") -> SSHClient:
        return SSHClient(
            cluster.get("AXLE_LOCAL_SSH_HOST", "127.0.0.1"),
            int(cluster.get("AXLE_LOCAL_SSH_PORT", "2222")),
            user,
            private_key(cluster, user),
            host_key=host_key or _host_key(cluster),
            slurm_bin_dir=slurm_bin_dir,
        )

    return make


@pytest.fixture(scope="session")
def ssh(ssh_factory: Callable[..., SSHClient]) -> Iterator[SSHClient]:
    """A scientist's SSH session, also used for checks the protocol does not offer."""
    with ssh_factory() as client:
        yield client


@pytest.fixture(scope="session")
def rest(cluster: dict[str, str], ssh_factory: Callable[..., SSHClient]) -> Iterator[RestClient]:
    key = Path(cluster["AXLE_LOCAL_JWT_KEY_FILE"]).read_bytes()
    client = RestClient(
        cluster.get("AXLE_LOCAL_REST_URL", "http://127.0.0.1:6820"),
        USER,
        jwt_key=key,
        api_version=cluster.get("AXLE_LOCAL_REST_API_VERSION", "v0.0.38"),
        files=ssh_factory().files,
    )
    yield client
    client.close()


@pytest.fixture(params=["ssh", "rest"])
def slurm(request: pytest.FixtureRequest) -> SlurmClient:
    """The contract suite runs once per transport."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def scratch(cluster: dict[str, str], ssh: SSHClient) -> str:
    """A fresh folder owned by the scientist, where test jobs run and write logs."""
    root = cluster.get("AXLE_LOCAL_SCRATCH_ROOT", "/var/lib/axle/cluster/scratch")
    path = f"{root.rstrip('/')}/{USER}/contract-{uuid.uuid4().hex[:8]}"
    result = ssh.run(["mkdir", "-p", path])
    assert result.exit_status == 0, result.err
    return path


@pytest.fixture
def marker() -> str:
    return f"axle-test:{uuid.uuid4().hex}"


def wait_for(
    fetch: Callable[[], list[JobInfo]],
    done: Callable[[list[JobInfo]], bool],
    timeout: float = 90.0,
) -> list[JobInfo]:
    """Poll like the tracker does until `done` holds; fail with what was seen last."""
    deadline = time.monotonic() + timeout
    seen: list[JobInfo] = []
    while time.monotonic() < deadline:
        seen = fetch()
        if done(seen):
            return seen
        time.sleep(1.0)
    raise AssertionError(f"gave up waiting after {timeout}s; last seen: {seen}")
