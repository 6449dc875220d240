"""Least privilege on the host (issue 8, finding 3): the hub's folder, the stack's secrets and
MLflow's store are unreadable to the cluster's users.

As root, with the stack's Unix users (a cluster user logs in on the same host). The layout is
the one `./dev up` and `./dev test` make, by the same shell function (compose/local/hub.sh),
checked on a folder of the test's own and, when they exist, on the real ones under
$AXLE_HOME.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AXLE_HOME = Path(os.environ.get("AXLE_HOME", "/var/lib/axle"))
STACK_DIR = Path(os.environ.get("AXLE_STACK_DIR", str(AXLE_HOME)))
HUB_USER = os.environ.get("AXLE_HUB_USER", "axle")
CLUSTER_USER = "scientist"

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(os.geteuid() != 0, reason="lays out folders for other users: needs root"),
]

# What the hub keeps in its folder, and what each holds that another user must not read.
HUB_FILES = ["db.sqlite3", "secret_key", "encryption.key", "mlflow-password", "logs/portal.log", "logs/worker.log"]


def hub_shell(function: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs a function of compose/local/hub.sh the way ./dev does."""
    script = f'source "{ROOT}/compose/local/lib.sh"; source "{ROOT}/compose/local/hub.sh"; {function} "$@"'
    return subprocess.run(["bash", "-c", script, "hub", *args], capture_output=True, text=True, timeout=60)


def read_as(user: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", user, "--", "cat", str(path)], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def cluster_user() -> str:
    try:
        pwd.getpwnam(CLUSTER_USER)
    except KeyError:
        pytest.fail(f"Unix user {CLUSTER_USER} is missing: start the stack with compose/local/stack.sh up")
    return CLUSTER_USER


@pytest.fixture
def home():
    """A temporary AXLE_HOME others may enter, as /var/lib/axle is (pytest's tmp_path is not)."""
    path = Path(tempfile.mkdtemp(prefix="axle-home-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _make_session_db(path: Path, session_key: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE django_session (session_key TEXT, session_data TEXT, expire_date TEXT)")
        db.execute("INSERT INTO django_session VALUES (?, 'admin', '2099-01-01')", (session_key,))


def _left_by_a_root_run(hub: Path) -> None:
    """The hub's folder as a root-run `./dev up` left it: 0644 files in 0755 folders."""
    for name in HUB_FILES + ["static/admin/base.css", "run/portal.pid"]:
        path = hub / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o755)
        if name == "db.sqlite3":
            _make_session_db(path, "k3y-of-the-admins-session")
        else:
            path.write_text(f"contents of {name}\n")
        path.chmod(0o644)
    hub.chmod(0o755)


def test_it_reproduces_finding_3_on_the_old_layout_and_the_hub_layout_fixes_it(home, cluster_user):
    hub = home / "hub"
    _left_by_a_root_run(hub)
    # Finding 3: as a cluster user, the session table of a 0644 database in a 0755 folder.
    leak = subprocess.run(
        ["runuser", "-u", cluster_user, "--", "/usr/bin/python3", "-c",
         "import sqlite3, sys; print(sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True)"
         ".execute('select session_key from django_session').fetchone()[0])",
         str(hub / "db.sqlite3")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert leak.returncode == 0 and "k3y-of-the-admins-session" in leak.stdout, leak.stderr

    done = hub_shell("hub_layout", str(hub))
    assert done.returncode == 0, done.stderr

    again = subprocess.run(
        ["runuser", "-u", cluster_user, "--", "/usr/bin/python3", "-c",
         "import sqlite3, sys; sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True)"
         ".execute('select session_key from django_session').fetchone()",
         str(hub / "db.sqlite3")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert again.returncode != 0 and "k3y-of-the-admins-session" not in again.stdout
    assert "unable to open database" in again.stderr


def _assert_hub_only(hub: Path, cluster_user: str, *, root_may_own: bool = False) -> list[Path]:
    uid = pwd.getpwnam(HUB_USER).pw_uid
    owners = {uid, 0} if root_may_own else {uid}
    checked = []
    for path in [hub, *hub.rglob("*")]:
        st = path.lstat()
        assert st.st_uid in owners, f"{path} is not {HUB_USER}'s"
        if stat.S_ISDIR(st.st_mode):
            assert stat.S_IMODE(st.st_mode) == 0o700, f"{path} is {oct(st.st_mode)}"
        else:
            assert stat.S_IMODE(st.st_mode) & 0o077 == 0, f"{path} is {oct(st.st_mode)}"
        checked.append(path)
    for name in HUB_FILES:
        if (hub / name).exists():
            denied = read_as(cluster_user, hub / name)
            assert denied.returncode != 0 and "Permission denied" in denied.stderr, name
            assert denied.stdout == ""
    return checked


def test_it_gives_the_hub_folder_to_the_hub_user_alone(home, cluster_user):
    hub = home / "hub"
    _left_by_a_root_run(hub)
    # The hub's serving state (AXLE_SERVING_DIR), as a root-run or an older layout left it.
    (hub / "serving").mkdir(mode=0o755)
    (hub / "serving" / "iris.json").write_text("{}")

    assert hub_shell("hub_layout", str(hub)).returncode == 0
    checked = _assert_hub_only(hub, cluster_user)
    assert {p.relative_to(hub).as_posix() for p in checked} >= set(HUB_FILES) | {"logs", "run", "static", "serving"}
    # The hub's user itself still reads and writes all of it.
    assert hub_shell("as_hub", "cat", str(hub / "secret_key")).stdout == "contents of secret_key\n"
    assert hub_shell("as_hub", "touch", str(hub / "run" / "qcluster.pid")).returncode == 0
    # The serving state is the hub's like the rest (the servers' own folders are elsewhere).
    assert {p.relative_to(hub).as_posix() for p in checked} >= {"serving", "serving/iris.json"}


def test_laying_out_twice_changes_nothing(home, cluster_user):
    hub = home / "hub"
    assert hub_shell("hub_layout", str(hub)).returncode == 0
    before = {p: (p.stat().st_mode, p.stat().st_uid) for p in [hub, *hub.rglob("*")]}
    assert hub_shell("hub_layout", str(hub)).returncode == 0
    assert {p: (p.stat().st_mode, p.stat().st_uid) for p in [hub, *hub.rglob("*")]} == before


def test_what_the_hub_creates_is_its_own(home, cluster_user):
    """A file the hub's processes write (under as_hub's umask) is 0600, a folder 0700."""
    hub = home / "hub"
    assert hub_shell("hub_layout", str(hub)).returncode == 0
    made = hub_shell("as_hub", "bash", "-c", f'echo x > "{hub}/logs/new.log" && mkdir "{hub}/new"')
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE((hub / "logs" / "new.log").stat().st_mode) == 0o600
    assert stat.S_IMODE((hub / "new").stat().st_mode) == 0o700


def test_the_hub_user_reads_what_the_stack_gives_every_hub(cluster_user):
    """cluster.env and the pinned host keys are public facts; the portal and worker need them."""
    for path in [STACK_DIR / "cluster.env", STACK_DIR / "ssh" / "known_hosts"]:
        assert hub_shell("as_hub", "test", "-r", str(path)).returncode == 0, path


def test_the_real_hub_folder_is_the_hub_users_alone(cluster_user):
    """After `./dev up` (or `./dev test`, which lays it out the same way). The suite itself
    runs as root and may have left a file of root's there since: still nobody else's."""
    hub = AXLE_HOME / "hub"
    if not hub.exists():
        pytest.fail(f"{hub} does not exist: ./dev up or ./dev test makes it")
    assert hub.stat().st_uid == pwd.getpwnam(HUB_USER).pw_uid
    _assert_hub_only(hub, cluster_user, root_may_own=True)


@pytest.mark.parametrize(
    "path",
    [
        "keys",
        "keys/scientist/id_ed25519",
        "secrets",
        "secrets/mlflow-admin-password",
        "mlflow",
        "mlflow/mlflow.db",
        "mlflow/basic_auth.db",
        "mlflow/basic_auth.ini",
        "logs/mlflow.log",
        "slurm/jwt_hs256.key",
    ],
)
def test_the_stacks_secrets_and_mlflows_store_are_unreadable_to_cluster_users(path, cluster_user):
    target = STACK_DIR / path
    assert target.exists(), f"{target} is missing: compose/local/stack.sh up makes it"
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode & 0o007 == 0, f"{target} is {oct(mode)}"
    if target.is_file():
        denied = read_as(cluster_user, target)
        assert denied.returncode != 0 and denied.stdout == "", target
        assert "Permission denied" in denied.stderr
