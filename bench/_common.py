"""What both benchmarks share: the local cluster's facts, a throwaway hub (database, home
folder, Django), SSH to the login node, cleanup on the cluster, CPU counters.

Nothing here touches the demo's data: the hub runs with AXLE_HOME in a temporary folder and
a database made for the run and dropped after it.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CLUSTER_ENV = Path(os.environ.get("AXLE_LOCAL_CLUSTER_ENV", "/var/lib/axle/cluster.env"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
BENCH_USER = "scientist"  # the cluster account the bench's jobs run as


def interruptible() -> None:
    """Ctrl-C and SIGTERM (also when started in the background, where SIGINT is ignored)
    end the run through its cleanup: cancel the jobs, drop the database."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def die(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def say(message: str) -> None:
    print(message, flush=True)


def run_id() -> str:
    return f"{time.strftime('%H%M%S')}-{os.getpid()}"


# ---------------------------------------------------------------- the local cluster


def use_site(stack_dir: str | None) -> None:
    """Talk to another local site than the shared one: the cluster.env of compose/local/stack.sh
    started with AXLE_STACK_DIR=`stack_dir` (and ports of its own), e.g. a private site that
    10,000 held jobs do not slow for everyone else."""
    global CLUSTER_ENV
    if stack_dir:
        CLUSTER_ENV = Path(stack_dir) / "cluster.env"


def cluster_env() -> dict[str, str]:
    """cluster.env as a dict, or exit: the local cluster is not up."""
    if not CLUSTER_ENV.exists():
        die(f"{CLUSTER_ENV} is missing: the local Slurm cluster is not up (start it with compose/local/stack.sh up).")
    env: dict[str, str] = {}
    for line in CLUSTER_ENV.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        words = shlex.split(value) if value else [""]
        env[key.strip()] = words[0] if words else ""
    return env


def ssh_client(env: dict[str, str], user: str = BENCH_USER):
    """A plain SSHClient (the hub's own class, pinned host key) to the login node as `user`."""
    from apps.integrations.slurm.ssh import SSHClient

    key = (Path(env["AXLE_LOCAL_KEYS_DIR"]) / user / "id_ed25519").read_text()
    known = Path(env["AXLE_LOCAL_SSH_KNOWN_HOSTS"]).read_text()
    return SSHClient(
        env.get("AXLE_LOCAL_SSH_HOST", "127.0.0.1"),
        int(env.get("AXLE_LOCAL_SSH_PORT", "2222")),
        user,
        key,
        known,
        command_timeout=600,
    )


def check_cluster(env: dict[str, str]):
    """Connect and ask slurmctld for a ping; exit with a clear message when that fails.
    Returns the connected client."""
    from apps.integrations.slurm.base import SlurmError

    try:
        ssh = ssh_client(env)
        ssh.connect()
        ssh.ping()
    except (SlurmError, OSError, KeyError) as exc:
        die(f"the local Slurm cluster does not answer ({exc}); is it up? (compose/local/stack.sh up)")
    return ssh


def remote(ssh, args: list[str], timeout: float = 600):
    """Run a command on the login node; exit on a transport failure."""
    return ssh.run(args, timeout=timeout)


def count_named(ssh, name: str) -> int:
    result = ssh.run(["squeue", "--noheader", "--me", f"--name={name}", "--format=%i"], timeout=120)
    return len(result.out.split())


def cancel_named(ssh, name: str, *, wait: float = 120) -> None:
    """Cancel every job of this run (by its unique job name, own jobs only) and wait until
    the queue no longer shows one."""
    result = ssh.run(["scancel", f"--user={BENCH_USER}", f"--name={name}"], timeout=300)
    if result.exit_status != 0:
        say(f"  scancel --name={name} said: {result.err}")
    deadline = time.monotonic() + wait
    while True:
        left = ssh.run(
            ["squeue", "--noheader", "--me", f"--name={name}", "--states=PENDING,RUNNING,SUSPENDED", "--format=%i"],
            timeout=120,
        ).out.split()
        if not left:
            say(f"  cancelled: no job named {name} is left in the queue")
            return
        if time.monotonic() > deadline:
            say(
                f"  WARNING: {len(left)} jobs named {name} are still queued; cancel them with "
                f"`scancel --name={name}` as {BENCH_USER}"
            )
            return
        ssh.run(["scancel", f"--user={BENCH_USER}", f"--name={name}"], timeout=300)
        time.sleep(2)


# ---------------------------------------------------------------- a throwaway hub


@contextmanager
def throwaway_hub(*, db_name: str, pg_url: str, sqlite: bool, keep_db: bool, env: dict[str, str]):
    """Point Django at a fresh database and a temporary AXLE_HOME, migrate, and drop it all
    afterwards. Yields the database URL."""
    home = Path(tempfile.mkdtemp(prefix="axle-bench-"))
    if sqlite:
        url = f"sqlite:///{home / 'bench.sqlite3'}"
    else:
        import psycopg

        admin = f"{pg_url.rstrip('/')}/postgres"
        try:
            with psycopg.connect(admin, autocommit=True) as conn:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db_name]).fetchone():
                    die(
                        f"database {db_name} already exists (another bench running, or one that was killed); "
                        f"drop it with `dropdb -h 127.0.0.1 -U postgres {db_name}` or pass --db-name"
                    )
                conn.execute(f'CREATE DATABASE "{db_name}"')
        except psycopg.OperationalError as exc:
            die(f"cannot reach PostgreSQL at {pg_url}: {exc}")
        url = f"{pg_url.rstrip('/')}/{db_name}"
    # Only this process's environment; nothing of the demo's configuration is used.
    for name in (
        "DATABASE_URL_FILE",
        "AXLE_REDIS_URL",
        "AXLE_ENCRYPTION_KEYS",
        "AXLE_ENCRYPTION_KEYS_FILE",
        "DJANGO_SECRET_KEY",
        "DJANGO_SECRET_KEY_FILE",
    ):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings.local",
            "DATABASE_URL": url,
            "AXLE_HOME": str(home),
            "AXLE_HUB_DIR": str(home / "hub"),
            "AXLE_STACK_DIR": env.get("AXLE_STACK_DIR", "/var/lib/axle"),
            "DJANGO_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        }
    )
    try:
        import django
        from django.core.management import call_command

        django.setup()
        t0 = time.monotonic()
        call_command("migrate", verbosity=0, interactive=False)
        say(f"hub: {url} migrated in {time.monotonic() - t0:.1f}s, AXLE_HOME={home}")
        yield url
    finally:
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001 - cleanup goes on whatever happened
            pass
        if not sqlite and not keep_db:
            import psycopg

            with psycopg.connect(f"{pg_url.rstrip('/')}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            say(f"hub: dropped database {db_name}")
        elif keep_db:
            say(f"hub: kept {url}")
        if not keep_db:
            import shutil

            shutil.rmtree(home, ignore_errors=True)


@contextmanager
def throwaway_mlflow(*, uri: str, env: dict[str, str], home: Path | None = None, login: str = "off"):
    """The hub opens an MLflow run per job at submission. Unless `uri` names a server, start
    a private one (SQLite, temporary folder) so the bench's runs never land in the demo's
    MLflow; stop it afterwards. Yields the tracking URI (None when the hub has no tracking).

    `login` ("off", "stack", "stack-nocache"): "stack" starts it as compose/local/stack.sh
    starts the demo's, with MLflow's basic-auth app (its own admin, random password; the hub
    logs in as it and makes a login per job) from the same mlflow_auth.ini; "stack-nocache"
    the same with the credential cache off (`auth_cache_ttl_seconds = 0`: a password hash
    checked on every request), as the stack ran before."""
    import secrets
    import shutil
    import signal
    import socket
    import subprocess
    import urllib.request

    if not (REPO / "apps" / "jobs" / "tracking.py").exists():
        yield None  # a hub from before MLflow tracking
        return
    if uri != "throwaway":
        os.environ["AXLE_MLFLOW_TRACKING_URI"] = env["AXLE_MLFLOW_TRACKING_URI"] = uri
        yield uri
        return
    stack_mlflow = Path(env.get("AXLE_LOCAL_PYTHON", "/nonexistent")).parent / "mlflow"
    # The basic-auth app needs MLflow's `auth` extra, which the stack's venv has.
    candidates = (
        [stack_mlflow]
        if login != "off"
        else [REPO / ".venv/bin/mlflow", Path(sys.executable).parent / "mlflow", stack_mlflow]
    )
    binary = next((b for b in candidates if b.exists()), None)
    if binary is None:
        die("no mlflow command to start a private MLflow server; pass --mlflow URL of one")
    folder = Path(tempfile.mkdtemp(prefix="axle-bench-mlflow-"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    log = (folder / "server.log").open("wb")
    # As the stack runs it (compose/local/stack.sh): without MLflow's job runner and its
    # consumers, which the hub never uses.
    server_env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    app: list[str] = []
    if login != "off":
        # The stack's own configuration file, rendered as stack.sh renders it.
        ini = (REPO / "compose" / "local" / "mlflow_auth.ini.in").read_text()
        ini = ini.replace("@MLFLOW_AUTH_DB@", f"sqlite:///{folder / 'basic_auth.db'}").replace(
            "@MLFLOW_ADMIN_USER@", "axle-bench-admin"
        )
        if login == "stack-nocache":
            ini = re.sub(r"(?m)^auth_cache_ttl_seconds\s*=.*$", "auth_cache_ttl_seconds = 0", ini)
        (folder / "basic_auth.ini").write_text(ini)
        password = secrets.token_urlsafe(32)
        server_env.update(
            MLFLOW_AUTH_CONFIG_PATH=str(folder / "basic_auth.ini"),
            MLFLOW_AUTH_ADMIN_PASSWORD=password,
            MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_urlsafe(32),
        )
        app = ["--app-name", "basic-auth"]
        os.environ["AXLE_MLFLOW_USERNAME"] = env["AXLE_MLFLOW_USERNAME"] = "axle-bench-admin"
        os.environ["AXLE_MLFLOW_PASSWORD"] = env["AXLE_MLFLOW_PASSWORD"] = password
        for name in ("AXLE_MLFLOW_PASSWORD_FILE",):
            os.environ.pop(name, None)
    server = subprocess.Popen(
        [
            str(binary),
            "server",
            *app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(folder / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=folder,
        env=server_env,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                die(f"the private MLflow server did not start; see {folder / 'server.log'}")
            time.sleep(0.5)
        say(f"mlflow: private server {uri} (pid {server.pid}), store in {folder}, login {login}")
        os.environ["AXLE_MLFLOW_TRACKING_URI"] = env["AXLE_MLFLOW_TRACKING_URI"] = uri
        yield uri
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)  # the server and its workers: a session of its own
            server.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def hub_cluster(env: dict[str, str], transport: str):
    """A hub user with an active grant on the local cluster (as `scientist`), limits high."""
    from django.contrib.auth import get_user_model

    from apps.clusters.local import grant_local, register_local_cluster

    user = get_user_model().objects.create_user(username="bench", password=None)
    cluster = register_local_cluster(env=env, transport=transport, name=f"local-{transport}")
    grant = grant_local(
        env=env,
        cluster=cluster,
        user=user,
        cluster_username=BENCH_USER,
        allowed_partitions=["debug"],
        max_active_jobs=None,
    )
    # Jobs are checked against the cluster's configuration: read it as the health check does.
    from apps.clusters.tasks import cluster_refresh_health

    cluster_refresh_health(cluster.pk)
    cluster.refresh_from_db()
    return user, cluster, grant


def add_db_args(parser) -> None:
    parser.add_argument("--db-name", default="axle_bench", help="throwaway PostgreSQL database (default axle_bench)")
    parser.add_argument(
        "--pg",
        default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server, without database (default %(default)s)",
    )
    parser.add_argument("--sqlite", action="store_true", help="use a temporary SQLite file instead of PostgreSQL")
    parser.add_argument(
        "--tcp-nodelay",
        action="store_true",
        help="set TCP_NODELAY on the SSH connections (a bench-only patch of SSHClient.connect)",
    )
    parser.add_argument(
        "--mlflow",
        default="throwaway",
        metavar="URL",
        help="MLflow server for the run the hub opens per job (default: a private one the bench starts and stops, "
        "so the demo's MLflow never sees them)",
    )
    parser.add_argument(
        "--mlflow-login",
        choices=["off", "stack", "stack-nocache"],
        default="off",
        help="the private MLflow's login: off (none, default); stack: MLflow's basic-auth app configured as "
        "compose/local/stack.sh configures the demo's (a login per job); stack-nocache: the same without "
        "the credential cache",
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the database and AXLE_HOME for inspection")


# ---------------------------------------------------------------- counters


class Waits:
    """Wall time the process spends waiting on the outside: SSH commands (by program) and
    HTTP requests (slurmrestd or MLflow). Installed by wrapping, nothing in apps/ changes."""

    calls: dict[str, int] = {}
    seconds: dict[str, float] = {}

    @classmethod
    def _add(cls, kind: str, since: float) -> None:
        cls.calls[kind] = cls.calls.get(kind, 0) + 1
        cls.seconds[kind] = cls.seconds.get(kind, 0.0) + time.monotonic() - since

    @classmethod
    def install(cls, env: dict[str, str]) -> None:
        import requests

        from apps.integrations.slurm.ssh import SSHClient

        exec_ = SSHClient._exec

        def timed_exec(self, command, **kwargs):
            words = command.split()
            # `env K=V ... program args`: name the program
            program = next((w for w in words if w != "env" and "=" not in w), "?") if words else "?"
            t0 = time.monotonic()
            try:
                return exec_(self, command, **kwargs)
            finally:
                cls._add(f"ssh {program.strip(chr(39))}", t0)

        SSHClient._exec = timed_exec
        rest = env.get("AXLE_LOCAL_REST_URL", "http://127.0.0.1:6820")
        request = requests.Session.request

        def timed_request(self, method, url, *args, **kwargs):
            t0 = time.monotonic()
            try:
                return request(self, method, url, *args, **kwargs)
            finally:
                cls._add("http slurmrestd" if str(url).startswith(rest) else "http mlflow", t0)

        requests.Session.request = timed_request

    @classmethod
    @contextmanager
    def sql(cls):
        """Also time every SQL statement and COMMIT (round trips to the database) while open."""
        from django.db import connection

        def wrapper(execute, sql, params, many, context):
            t0 = time.monotonic()
            try:
                return execute(sql, params, many, context)
            finally:
                cls._add("db (SQL)", t0)

        commit = connection.commit

        def timed_commit():
            t0 = time.monotonic()
            try:
                return commit()
            finally:
                cls._add("db (COMMIT)", t0)

        connection.commit = timed_commit
        try:
            with connection.execute_wrapper(wrapper):
                yield
        finally:
            del connection.commit  # back to the class's method

    @classmethod
    def snapshot(cls) -> tuple[dict[str, int], dict[str, float]]:
        return dict(cls.calls), dict(cls.seconds)

    @classmethod
    def since(cls, snap) -> dict[str, tuple[int, float]]:
        calls, seconds = snap
        return {
            k: (cls.calls[k] - calls.get(k, 0), cls.seconds[k] - seconds.get(k, 0.0))
            for k in cls.calls
            if cls.calls[k] - calls.get(k, 0)
        }


class SSHHandshakes:
    """Counts real SSH connections (key exchange + auth) the process opens."""

    count = 0

    @classmethod
    def install(cls) -> None:
        import paramiko

        original = paramiko.SSHClient.connect

        def connect(self, *args, **kwargs):
            cls.count += 1
            return original(self, *args, **kwargs)

        paramiko.SSHClient.connect = connect


def tcp_nodelay() -> None:
    """Set TCP_NODELAY on every SSH connection this process opens (paramiko leaves Nagle on:
    a command's small packets then wait for the peer's delayed ACK, about 40 ms a command)."""
    import socket

    from apps.integrations.slurm.ssh import SSHClient

    original = SSHClient.connect

    def connect(self) -> None:
        original(self)
        transport = self._client.get_transport() if self._client else None
        if transport is not None:
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    SSHClient.connect = connect


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f}/{five:.2f} on {os.cpu_count()} cores"


def pids_named(comm: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == comm:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process so far (from /proc; needs the right to read it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def cpu_of_named(comm: str) -> float:
    return sum(c or 0.0 for c in (cpu_seconds(p) for p in pids_named(comm)))


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot."""
    words = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(w) for w in words[:8]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / CLK_TCK


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def git_head() -> str:
    import subprocess

    if os.environ.get("BENCH_HUB_LABEL"):
        return os.environ["BENCH_HUB_LABEL"]

    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "log", "-1", "--format=%h %s"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        out = ""
    return out[:90] or f"tree {REPO}"


def describe_hub() -> str:
    """Which hub is measured: the commit, and whether it reuses Slurm connections."""
    from apps.clusters import transport

    reuse = "reuses connections" if hasattr(transport, "close_all") else "one connection per call"
    return f"{git_head()} [{reuse}]"
