#!/usr/bin/env python
"""Portal capacity: 200 logged-in dashboard users against the portal served as `./dev up`
serves it (gunicorn), each with a live job page open and navigating every ~15 s.

    .venv/bin/python bench/portal_load.py [--users 200] [--jobs-per-user 500] [--duration 120]
    .venv/bin/python bench/portal_load.py --server-tree /tmp/load-before   # another checkout's portal
    .venv/bin/python bench/portal_load.py --closed-loop                   # the issue's old pattern
    .venv/bin/python bench/portal_load.py --pattern plain                 # no log tail, no MLflow run

What it does:

1. A throwaway PostgreSQL database and AXLE_HOME (as bench/list_rate.py): `--users` users,
   each with `--jobs-per-user` jobs (1 % running, 3 clusters) and two or three audit events per
   job (the job page's timeline), one browser session per user. With `--pattern plain` no
   cluster and no MLflow; `--pattern mixed` (below) moves each user's running job to the
   local cluster and gives half of them an MLflow run in a throwaway MLflow.
2. The portal of `--server-tree` (default: this checkout) under gunicorn on a free port, with
   that tree's configuration: `portal/gunicorn.conf.py` when the tree has one (what `dev`
   starts), otherwise `dev`'s old command line (`--workers 3 --timeout 120`);
   `--gunicorn "ARGS"` overrides it. collectstatic runs first, as in `dev`.
3. An open-loop load (asyncio, aiohttp): every user keeps two tabs.
   - Tab 1: the page of one of their running jobs, with its live regions polling as the
     browser does: htmx asks `/jobs/<id>/?live=<version>` at the rate the page's poller says
     (`{% live_poller %}`'s `hx-trigger="every Ns"`: 5 s now, 3 s before; a fixed rate, and
     while a poll is in flight the next one waits, as htmx queues it). The metrics chart
     (metrics.js) asks `/api/v1/jobs/<id>/metrics/` when the page opens and again when a
     poll's answer carries a new curves version (`data-curves`; "" for a job without an
     MLflow run: no request); a page without `data-curves` (before this change) has the
     chart ask 4 s after each answer, whatever changed.
   - Tab 2: every 10-20 s (uniform, mean 15 s) a new page: the home page, the jobs list with a
     filter (status, cluster, search, sort, a page), another job's page, or the API list.
     The page's own pollers run while it is shown (home and the list every 5 s).
   - A user's first page also loads its CSS and scripts (cached afterwards: hashed names).
   - The bench changes `--changes-per-second` running jobs' metrics and elapsed time, so some
     polls find a change (200 with the regions) and most find none (204).
   - `--pattern mixed` (the default) adds what a real running job's page does besides its
     poll (`--pattern plain` leaves it out, as this bench did before):
     * every open job page (tab 1) is a running job on the local cluster (`load-local`, a
       grant per user, all as the cluster account `scientist`, so each grant has its own
       SSH connections as distinct accounts would), with stdout and stderr in a folder of
       their own on the login node; the page tails both as `_log_chunk.html` says (the next
       read at once or after the `load delay:Ns` the answer carries, until an answer has no
       next read): one request per stream and an SSH command per read before the logtail
       branch, one request for both streams and an SFTP read of each since.
       `--log-lines-per-second` (20) stdout files gain a line each second: a job prints a
       line every ~10 s; stderr stays empty;
     * every `--runs-every`'th (2nd: half) of those jobs has an MLflow run in the bench's
       throwaway MLflow (3 metrics x 20 points); `--points-per-second` (5) runs gain a point
       of each metric each second (one every ~20 s per run), so the live poll's MLflow call
       (`job_curves_version`) sometimes finds new points and the chart fetches the history;
       the page's artifacts list (`hx-trigger="load"`, one MLflow call) is fetched once.
     The job pages opened in tab 2 tail their logs too (their clusters have no login host:
     one read, an error note, the tail stops).
   Users start spread over the first 15 s; figures cover `--duration` seconds after
   `--warmup`.

`--closed-loop` is the pattern the issue measured first: every user sends the next request
as soon as the last one answered (home, list, job page, API list, poll), no think time.

It prints requests per second, p50/p95/p99 and errors per kind of request, the portal's CPU
(gunicorn's processes, from /proc), the client's CPU, the machine's, and the load average. An
error is a transport failure, a time-out (`--timeout`, 30 s) or a status other than the
expected ones (200, 204, 286 for polls, 304). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c  # noqa: E402

SCRIPT = "#!/bin/bash\n#SBATCH --partition=debug\n#SBATCH --time=10\n" + "python train.py --epochs 10\n" * 20
OLD_DEV_GUNICORN = "--workers 3 --timeout 120"  # `dev` before this branch (165a085)
POLLER = re.compile(r'<div id="live-[^"]*" class="live-poller"[^>]*>')
HX_GET = re.compile(r'hx-get="([^"]*)"')
EVERY = re.compile(r'hx-trigger="every (\d+(?:\.\d+)?)s"')
METRICS = re.compile(r'id="metric-charts" data-url="([^"]*)"')
# The curves' version the job page's live poll carries (metrics.js fetches the history when it
# changes); on a page without it (before the merged poll) the chart polls on its own every 4 s.
CURVES = re.compile(r'id="job-metrics-summary" data-curves="([^"]*)"')
# The log viewer: a span per stream that htmx replaces with the next chunk and a new span,
# asked at once after a chunk with text ("load") and 3 s after an empty one ("load delay:3s").
# Since the logtail branch one span asks for both streams (`id="log-tail"`) and the answer puts
# each stream's text at its end out of band (`hx-swap-oob="beforebegin:..."`).
LOG_MORE = re.compile(
    r'<span(?: id="log-tail")?(?: class="log-more")? hx-get="([^"]*/logs/[^"]*)" hx-trigger="load(?: delay:(\d+)s)?"'
)
LOG_TEXT_OOB = 'hx-swap-oob="beforebegin:'

# Other fragments a page asks for once it has loaded (the artifacts of a job with a run).
LOAD_ONCE = re.compile(r'<div hx-get="([^"]*)" hx-trigger="load"')
ASSETS = re.compile(r'<(?:link rel="stylesheet" href|script src)="(/static/[^"]*)"')
OK = {200, 204, 286, 304}


# ---------------------------------------------------------------- data


def make_data(*, users: int, jobs_per_user: int, say=c.say) -> list[dict]:
    """Users, grants, jobs, timelines and sessions. Returns per user: session key, the uuid of
    the running job its tab keeps open, some of its other jobs."""
    import hashlib
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from apps.audit.models import AuditEvent
    from apps.clusters.models import Cluster, ClusterGrant
    from apps.jobs.models import Job

    User = get_user_model()
    t0 = time.monotonic()
    people = User.objects.bulk_create(
        [User(username=f"load{i:04d}", password="!unusable") for i in range(users)], batch_size=1000
    )
    people = list(User.objects.filter(username__startswith="load").order_by("username"))
    clusters = [Cluster.objects.create(name=f"hpc{i}", transport="ssh") for i in range(3)]
    grants = {}
    for user in people:
        for cluster in clusters:
            grants[(user.pk, cluster.pk)] = ClusterGrant(
                user=user, cluster=cluster, cluster_username=user.username, status="active"
            )
    ClusterGrant.objects.bulk_create(grants.values())
    statuses = ["completed"] * 70 + ["failed"] * 19 + ["cancelled"] * 10 + ["running"]
    now = timezone.now()
    total = users * jobs_per_user
    sha = hashlib.sha256(SCRIPT.encode()).hexdigest()
    batch, events, seq = [], [], 0
    for i in range(total):
        owner = people[i % users]
        cluster = clusters[(i // users) % 3]
        status = statuses[(i // users) % 100]
        created = now - timedelta(seconds=total - i)
        job = Job(
            uuid=uuid.uuid4(),
            owner=owner,
            grant=grants[(owner.pk, cluster.pk)],
            cluster=cluster,
            name=f"train-{i}",
            status=status,
            script=SCRIPT,
            script_sha256=sha,
            cluster_username=owner.username,
            marker=f"axle-load-{uuid.uuid4().hex}",
            workdir=f"/scratch/{owner.username}/axle-jobs/{i}",
            parameters={"LR": "0.01", "EPOCHS": "10", "BATCH": "64"},
            effective_request={"partition": "debug", "cpus": 4, "mem_mb": 8000, "time_minutes": 60},
            accounting={"node_list": "node01", "elapsed_seconds": 300, "max_rss_bytes": 123456789},
            metrics={"accuracy": 0.9, "loss": 0.1},
            slurm_job_id=str(100000 + i),
            slurm_state=status.upper(),
            created_at=created,
            started_at=created + timedelta(seconds=5),
            finished_at=None if status == "running" else created + timedelta(seconds=305),
        )
        batch.append(job)
        actions = ["job.created", "job.submitted"] + ([f"job.{status}"] if status != "running" else [])
        for n, action in enumerate(actions):
            seq += 1
            events.append(
                AuditEvent(
                    seq=seq,
                    created_at=created + timedelta(seconds=n),
                    actor_id=owner.pk,
                    actor_username=owner.username,
                    action=action,
                    subject_type="jobs.job",
                    subject_id=str(job.uuid),
                    subject_text=job.name,
                    after={"status": status},
                    version=2,
                    prev_hash="0" * 64,
                    hash=hashlib.sha256(f"load-{seq}".encode()).hexdigest(),
                )
            )
        if len(batch) == 5000:
            Job.objects.bulk_create(batch)
            AuditEvent.objects.bulk_create(events)
            batch, events = [], []
    if batch:
        Job.objects.bulk_create(batch)
        AuditEvent.objects.bulk_create(events)
    from django.db import connection

    # `created_at` is auto_now_add (bulk_create stamps every row now): spread them over time,
    # one second apart in creation order, as a real history is.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE jobs_job SET created_at = %s - ((SELECT max(id) FROM jobs_job) - id) * interval '1 second'", [now]
        )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for table in ("jobs_job", "audit_auditevent", "accounts_user", "clusters_clustergrant"):
                cursor.execute(f"VACUUM ANALYZE {table}")
    say(f"  {users} users, {total} jobs, {seq} audit events in {time.monotonic() - t0:.0f}s")

    return people_of(users)


class Mutator:
    """Changes some running jobs' metrics and elapsed time each second (what tracking does)."""

    def __init__(self, per_second: float, jobs: list[str]):
        self.per_second = per_second
        self.jobs = jobs
        self.changes = 0

    def change(self, rng: random.Random) -> None:
        from datetime import timedelta

        from django.db.models import F
        from django.utils import timezone

        from apps.jobs.models import Job

        n = int(self.per_second) + (1 if rng.random() < self.per_second % 1 else 0)
        for job in rng.sample(self.jobs, min(n, len(self.jobs))):
            Job.objects.filter(uuid=job).update(
                metrics={"accuracy": round(rng.random(), 4), "loss": round(rng.random(), 4)},
                started_at=F("started_at") - timedelta(seconds=60),
                updated_at=timezone.now(),
            )
            self.changes += 1


class LiveJobs:
    """--pattern mixed: what the open job pages' jobs need to be real on the outside.

    Every user's open running job moves to the local cluster (a grant per user on cluster
    `load-local`, all as the cluster account `scientist`, each grant its own SSH connection as
    distinct accounts would be), with stdout and stderr in a folder of its own on the login
    node: the log tail reads them over SSH. Every other one (`--runs-every 2`: half) gets an
    MLflow run in the bench's throwaway MLflow with `METRICS_PER_RUN` metrics of
    `POINTS_PER_METRIC` points. While the load runs, `lines_per_second` stdout files gain a
    line each second (one SSH command) and `points_per_second` runs a point of each metric
    (what a training loop logs)."""

    METRICS_PER_RUN = 3
    POINTS_PER_METRIC = 20

    def __init__(self, env: dict[str, str], people: list[dict], *, runs_every: int, lines: float, points: float):
        self.env = env
        self.people = people
        self.runs_every = runs_every
        self.lines_per_second = lines
        self.points_per_second = points
        self.folder = ""
        self.logs: list[str] = []
        self.runs: list[str] = []
        self.steps: dict[str, int] = {}
        self.ssh = None
        self.lines = 0
        self.points = 0

    def prepare(self) -> None:
        from apps.clusters.local import host_key_from_known_hosts
        from apps.clusters.models import Cluster, ClusterGrant
        from apps.core import crypto
        from apps.integrations.mlflow.base import MetricPoint
        from apps.jobs import tracking
        from apps.jobs.models import Job

        t0 = time.monotonic()
        self.ssh = c.check_cluster(self.env)
        self.folder = c.remote(self.ssh, ["mktemp", "-d", "/tmp/axle-load-XXXXXX"]).out.strip()
        if not self.folder.startswith("/tmp/axle-load-"):
            c.die(f"mktemp on the login node gave {self.folder!r}")
        # As apps.clusters.local registers it, but written directly: the bench's made-up audit
        # trail is not a chain the hub's audited services can append to.
        host_key = host_key_from_known_hosts(self.env["AXLE_LOCAL_SSH_KNOWN_HOSTS"])
        cluster, _ = Cluster.objects.update_or_create(
            name="load-local",
            defaults={
                "transport": "ssh",
                "is_active": True,
                "login_host": self.env.get("AXLE_LOCAL_SSH_HOST", "127.0.0.1"),
                "login_port": int(self.env.get("AXLE_LOCAL_SSH_PORT", "2222")),
                "host_key": "\n".join(line.strip() for line in host_key.strip().splitlines() if line.strip()),
                "slurm_bin_dir": self.env.get("AXLE_LOCAL_SLURM_BIN_DIR") or "/usr/bin",
            },
        )
        key = (Path(self.env["AXLE_LOCAL_KEYS_DIR"]) / c.BENCH_USER / "id_ed25519").read_text()
        from django.contrib.auth import get_user_model

        users = {u.username: u for u in get_user_model().objects.filter(username__startswith="load")}
        tracking_client = tracking.client()
        experiment = tracking_client.ensure_experiment(f"axle-load-{uuid.uuid4().hex[:8]}")
        now_ms = int(time.time() * 1000)
        paths = []
        for n, person in enumerate(self.people):
            if not person["running"]:
                continue
            job = Job.objects.select_related("owner").get(uuid=person["running"][0])
            grant = ClusterGrant.objects.filter(user=job.owner, cluster=cluster).first()
            if grant is None:
                grant = ClusterGrant.objects.create(
                    user=users[job.owner.username], cluster=cluster, cluster_username=c.BENCH_USER, status="active"
                )
            # This run's AXLE_HOME has a new encryption key: store the key again each run.
            ClusterGrant.objects.filter(pk=grant.pk).update(
                ssh_private_key_encrypted=crypto.encrypt(key.strip() + "\n")
            )
            run_id = ""
            if self.runs_every and n % self.runs_every == 0:
                run_id = tracking_client.create_run(experiment, f"load-{n}")
                points = [
                    MetricPoint(key=f"m{k}", value=random.random(), timestamp_ms=now_ms + step, step=step)
                    for k in range(self.METRICS_PER_RUN)
                    for step in range(self.POINTS_PER_METRIC)
                ]
                tracking_client.log_metrics(run_id, points)
                self.runs.append(run_id)
                self.steps[run_id] = self.POINTS_PER_METRIC
            out, err = f"{self.folder}/{n}.out", f"{self.folder}/{n}.err"
            paths += [out, err]
            self.logs.append(out)
            Job.objects.filter(pk=job.pk).update(
                cluster=cluster,
                grant=grant,
                cluster_username=c.BENCH_USER,
                stdout_path=out,
                stderr_path=err,
                mlflow_experiment_id=experiment if run_id else "",
                mlflow_run_id=run_id,
            )
        # stdout starts with a screenful, stderr empty (as most training jobs).
        script = (
            'for f in "$@"; do case "$f" in *.out) seq -f "epoch 0 batch %g loss 0.5" 1 40 > "$f";; '
            '*) : > "$f";; esac; done'
        )
        for i in range(0, len(paths), 200):
            c.remote(self.ssh, ["sh", "-c", script, "sh", *paths[i : i + 200]])
        c.say(
            f"  mixed pages: {len(self.logs)} running jobs on cluster load-local (logs in {self.folder} on the login "
            f"node), {len(self.runs)} with an MLflow run ({self.METRICS_PER_RUN} metrics x {self.POINTS_PER_METRIC} "
            f"points) in {time.monotonic() - t0:.0f}s"
        )

    def grow(self, rng: random.Random) -> None:
        """One second of the jobs' output: lines appended to some stdouts, points to some runs."""
        from apps.integrations.mlflow.base import MetricPoint
        from apps.jobs import tracking

        n = int(self.lines_per_second) + (1 if rng.random() < self.lines_per_second % 1 else 0)
        files = rng.sample(self.logs, min(n, len(self.logs)))
        if files:
            line = f"epoch 1 batch {self.lines} loss {rng.random():.4f}"
            script = 'line=$1; shift; for f in "$@"; do printf "%s\\n" "$line" >> "$f"; done'
            c.remote(self.ssh, ["sh", "-c", script, "sh", line, *files], timeout=30)
            self.lines += len(files)
        n = int(self.points_per_second) + (1 if rng.random() < self.points_per_second % 1 else 0)
        now_ms = int(time.time() * 1000)
        for run_id in rng.sample(self.runs, min(n, len(self.runs))):
            step = self.steps[run_id]
            self.steps[run_id] += 1
            tracking.client().log_metrics(
                run_id,
                [
                    MetricPoint(key=f"m{k}", value=rng.random(), timestamp_ms=now_ms, step=step)
                    for k in range(self.METRICS_PER_RUN)
                ],
            )
            self.points += 1

    def clean(self) -> None:
        if self.ssh is None:
            return
        if self.folder.startswith("/tmp/axle-load-"):
            c.remote(self.ssh, ["rm", "-rf", "--", self.folder], timeout=60)
        self.ssh.close()


def people_of(db_users: int) -> list[dict]:
    """--reuse-db: the users an earlier run made, with a fresh session each (this run's key)."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore

    from apps.accounts.middleware import LAST_SEEN
    from apps.jobs.models import Job

    backend = next(b for b in settings.AUTHENTICATION_BACKENDS if "LocalPassword" in b)
    result = []
    for user in get_user_model().objects.filter(username__startswith="load").order_by("username")[:db_users]:
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = backend
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session[LAST_SEEN] = int(time.time())
        session.create()
        running = (
            Job.objects.filter(owner=user, status="running").order_by("-created_at").values_list("uuid", flat=True)
        )
        others = Job.objects.filter(owner=user).order_by("?").values_list("uuid", flat=True)[:20]
        result.append(
            {"session": session.session_key, "running": [str(u) for u in running], "others": [str(u) for u in others]}
        )
    return result


@contextmanager
def existing_hub(*, db_name: str, pg_url: str):
    """--reuse-db: an earlier run's database (made with --keep-db), kept afterwards; a fresh
    AXLE_HOME (secret key, static files) as throwaway_hub makes."""
    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="axle-bench-"))
    for name in ("DATABASE_URL_FILE", "AXLE_REDIS_URL", "DJANGO_SECRET_KEY", "DJANGO_SECRET_KEY_FILE"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings.local",
            "DATABASE_URL": f"{pg_url.rstrip('/')}/{db_name}",
            "AXLE_HOME": str(home),
            "AXLE_HUB_DIR": str(home / "hub"),
            "DJANGO_LOG_LEVEL": "WARNING",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)  # made by an older checkout, maybe
    c.say(f"hub: reusing database {db_name} (migrated), AXLE_HOME={home}")
    try:
        yield
    finally:
        from django.contrib.sessions.models import Session
        from django.db import connections

        Session.objects.all().delete()
        connections.close_all()
        shutil.rmtree(home, ignore_errors=True)


def profile(people: list[dict], repeat: int, top: int) -> None:
    """In-process (Django's test client, no server): each kind of request `repeat` times, its
    SQL statements and mean time, then cProfile's top functions of the job page's poll."""
    import cProfile
    import pstats

    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    call_command("collectstatic", interactive=False, verbosity=0)
    user = people[0]
    client = Client(HTTP_HOST="localhost")
    client.cookies["sessionid"] = user["session"]
    job = user["running"][0]
    page = client.get(f"/jobs/{job}/")
    version = re.search(r'data-live-version="([^"]+)"', page.content.decode()).group(1)

    def held(url: str) -> str:
        # Asked just before the polls: a running job's minutes (in the list's version) move.
        return re.search(r'data-live-version="([^"]+)"', client.get(url).content.decode()).group(1)

    kinds = [
        ("page job", f"/jobs/{job}/", {}),
        ("poll job (204)", f"/jobs/{job}/?live={version}", {"HTTP_HX_REQUEST": "true"}),
        ("poll job (200)", f"/jobs/{job}/?live=old", {"HTTP_HX_REQUEST": "true"}),
        ("api metrics", f"/api/v1/jobs/{job}/metrics/", {"HTTP_ACCEPT": "application/json"}),
        ("page home", "/", {}),
        ("poll home (204)", lambda: f"/?live={held('/')}", {"HTTP_HX_REQUEST": "true"}),
        ("poll home (200)", "/?live=old", {"HTTP_HX_REQUEST": "true"}),
        ("page jobs list", "/jobs/?status=running", {}),
        (
            "poll jobs list (204)",
            lambda: f"/jobs/?status=running&page=1&live={held('/jobs/?status=running')}",
            {"HTTP_HX_REQUEST": "true"},
        ),
        ("poll jobs list (200)", "/jobs/?status=running&page=1&live=old", {"HTTP_HX_REQUEST": "true"}),
        ("api list", "/api/v1/jobs/?limit=50", {"HTTP_ACCEPT": "application/json"}),
    ]
    c.say(f"{'request (in-process)':<22} {'status':>6} {'SQL':>4} {'mean ms':>8}; {c.load()}")
    for label, url, headers in kinds:
        url = url() if callable(url) else url
        times = []
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as ctx:
                t = time.perf_counter()
                response = client.get(url, **headers)
                times.append(time.perf_counter() - t)
        c.say(
            f"{label:<22} {response.status_code:>6} {len(ctx.captured_queries):>4} "
            f"{sum(times) / len(times) * 1000:>8.1f}"
        )
        for q in ctx.captured_queries if os.environ.get("BENCH_SHOW_SQL") else []:
            c.say(f"    {q['sql'][:160]}")
    for label, url, headers in [
        ("job polls (204)", f"/jobs/{job}/?live={version}", {"HTTP_HX_REQUEST": "true"}),
        ("home pages", "/", {}),
    ]:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(repeat):
            client.get(url, **headers)
        profiler.disable()
        c.say(f"cProfile of {repeat} {label}, by cumulative time:")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(top)


# ---------------------------------------------------------------- the server


def hanging_mlflow() -> str:
    """--mlflow-hangs: a port that accepts connections and never answers (an MLflow stuck
    behind its proxy, or out of workers). Returns its URL; the threads are daemons."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    held = []

    def accept():
        while True:
            conn, _ = listener.accept()
            held.append(conn)  # kept open, never read nor answered

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gunicorn_args(tree: Path, override: str | None) -> list[str]:
    if override:
        return shlex.split(override)
    if (tree / "portal" / "gunicorn.conf.py").exists():
        return ["--config", "portal/gunicorn.conf.py"]
    return shlex.split(OLD_DEV_GUNICORN)


def start_server(tree: Path, python: Path, args: list[str], port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_LOG_LEVEL"}
    env["DJANGO_LOG_LEVEL"] = "WARNING"
    subprocess.run(
        [str(python), "manage.py", "collectstatic", "--noinput", "-v0"], cwd=tree, env=env, check=True, timeout=600
    )
    gunicorn = python.parent / "gunicorn"
    # An access log line per request, as `dev` writes one.
    access = log.with_name("access.log")
    command = [
        str(gunicorn),
        "portal.wsgi:application",
        *args,
        "--bind",
        f"127.0.0.1:{port}",
        "--access-logfile",
        str(access),
    ]
    c.say(f"server: {' '.join(shlex.quote(w) for w in command)} (cwd {tree})")
    server = subprocess.Popen(
        command, cwd=tree, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    import urllib.request

    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            c.die(f"the portal did not start; see {log}")
        time.sleep(0.5)


def stop_server(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def sshd_cpu() -> float:
    """CPU seconds of the login node's sshd so far: every sshd process's own and its reaped
    children's (the shells and `tail`s a read runs; a closed session's in the listener's)."""
    total = 0.0
    for pid in c.pids_named("sshd"):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15]) / c.CLK_TCK  # utime, stime, cutime, cstime
    return total


def pid_listening_on(uri: str) -> int | None:
    """The process started with `--port <uri's port>` (the bench's MLflow server)."""
    port = uri.rsplit(":", 1)[-1].strip("/")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                words = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"server" in words and b"--port" in words and port.encode() in words:
                return int(entry.name)
    return None


def tree_cpu(root: int) -> float:
    """CPU seconds of a process and all its descendants alive now."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].append(int(entry.name))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += c.cpu_seconds(pid) or 0.0
        todo.extend(children.get(pid, []))
    return total


# ---------------------------------------------------------------- the load


class Stats:
    def __init__(self) -> None:
        self.window = (0.0, 0.0)
        self.times: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.errors: dict[str, list[str]] = defaultdict(list)
        self.queued = 0  # polls htmx would have held back: the last one still in flight
        self.lag: list[float] = []  # how late the client's own event loop wakes (a starved client)
        self.log_reads: dict[str, int] = defaultdict(int)

    def counts(self, started: float) -> bool:
        return self.window[0] <= started < self.window[1]


class Charts:
    """metrics.js on a job page whose live poll carries the curves' version: it fetches the
    history when the version is not the one it last fetched for ("" means no run: nothing)."""

    def __init__(self, user: User, url: str):
        self.user = user
        self.url = url
        self.fetched = ""
        self.wanted = ""
        self.changed = asyncio.Event()

    def seen(self, version: str) -> None:
        self.wanted = version
        self.changed.set()

    async def follow(self, version: str) -> None:
        self.wanted = version
        while True:
            if self.wanted and self.wanted != self.fetched:
                self.fetched = self.wanted
                await self.user.get("api metrics", self.url, accept_json=True)
                continue
            self.changed.clear()
            await self.changed.wait()


class User:
    def __init__(
        self, n: int, data: dict, client, stats: Stats, rng: random.Random, timeout: float, mixed: bool = False
    ):
        self.n = n
        self.data = data
        self.client = client
        self.stats = stats
        self.rng = rng
        self.timeout = timeout
        self.cookie = f"sessionid={data['session']}"
        self.mixed = mixed
        self.assets_loaded = False

    async def get(self, kind: str, url: str, *, htmx: bool = False, accept_json: bool = False):
        headers = {}
        if htmx:
            headers["HX-Request"] = "true"
        if accept_json:
            headers["Accept"] = "application/json"
        started = time.monotonic()
        headers["Cookie"] = self.cookie
        try:
            async with self.client.get(url, headers=headers, allow_redirects=False) as response:
                text = await response.text()
                status = response.status
            error = None if status in OK else f"HTTP {status}"
        except Exception as exc:  # noqa: BLE001 - every failure is a counted error
            text, status, error = "", 0, f"{type(exc).__name__}: {exc}"[:200]
        if self.stats.counts(started):
            self.stats.times[kind].append(time.monotonic() - started)
            self.stats.statuses[kind][status] += 1
            if error:
                self.stats.errors[kind].append(error)
        return status, text

    async def page(self, kind: str, url: str) -> list[asyncio.Task]:
        """Load a page as a browser does and start its pollers; returns them (to stop)."""
        status, text = await self.get(f"page {kind}", url)
        if status != 200:
            return []
        if not self.assets_loaded:
            self.assets_loaded = True
            assets = [html.unescape(a) for a in ASSETS.findall(text)]
            await asyncio.gather(*(self.get("static", a) for a in assets))
        tasks = []
        metrics = METRICS.search(text)
        curves = CURVES.search(text)
        charts = Charts(self, html.unescape(metrics.group(1))) if metrics and curves else None
        for div in POLLER.findall(text):
            target = HX_GET.search(div)
            every = EVERY.search(div)
            if target and every:
                tasks.append(
                    asyncio.create_task(
                        self.live(f"poll {kind}", html.unescape(target.group(1)), float(every.group(1)), charts)
                    )
                )
        if self.mixed:
            for url in LOAD_ONCE.findall(text):
                tasks.append(asyncio.create_task(self.get(f"{kind} fragment", html.unescape(url))))
            for url, delay in LOG_MORE.findall(text):
                tasks.append(asyncio.create_task(self.tail(html.unescape(url), float(delay or 0))))
        if charts:  # metrics.js: the history when the page opens, then when the poll says it changed
            tasks.append(asyncio.create_task(charts.follow(curves.group(1))))
        elif metrics and tasks:  # the older metrics.js: its own poll while the job can still change
            tasks.append(asyncio.create_task(self.metrics_poll(html.unescape(metrics.group(1)))))
        elif metrics:
            await self.get("api metrics", html.unescape(metrics.group(1)), accept_json=True)
        return tasks

    async def live(self, kind: str, url: str, every: float, charts: Charts | None = None) -> None:
        """htmx's `every Ns`: a fixed rate; a tick while a poll is in flight waits for it. A
        changed answer that carries the curves' version tells `charts`."""
        url_box = [url]
        inflight: asyncio.Task | None = None
        pending = False
        stop = asyncio.Event()

        async def fire():
            nonlocal pending
            while True:
                status, text = await self.get(kind, url_box[0], htmx=True)
                if status == 286:
                    stop.set()
                elif status == 200:
                    curves = CURVES.search(text)
                    if charts and curves:
                        charts.seen(curves.group(1))
                    div = POLLER.search(text)
                    target = HX_GET.search(div.group(0)) if div else None
                    if target:
                        url_box[0] = html.unescape(target.group(1))
                    elif div:
                        stop.set()  # final: the new poller has no hx-get
                if not pending or stop.is_set():
                    return
                pending = False

        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), timeout=every)
                    break
                except TimeoutError:
                    pass
                if inflight is not None and not inflight.done():
                    pending = True
                    if self.stats.counts(time.monotonic()):
                        self.stats.queued += 1
                    continue
                inflight = asyncio.create_task(fire())
        finally:
            if inflight is not None and not inflight.done():
                inflight.cancel()

    async def tail(self, url: str, delay: float) -> None:
        """One stream of the log viewer, as htmx runs `_log_chunk.html`: the next chunk at once
        after one with text, 3 s after an empty one; it stops when the answer has no span (the
        job ended, or an error)."""
        while url:
            if delay:
                await asyncio.sleep(delay)
            status, text = await self.get("log tail", url, htmx=True)
            more = LOG_MORE.search(text) if status == 200 else None
            if self.stats.counts(time.monotonic()) and status == 200:
                # The chunk is the log's text, then the notes and the next read's span.
                found = text and (not text.startswith("<span") or LOG_TEXT_OOB in text)
                self.stats.log_reads["with text" if found else "empty"] += 1
            if more is None:
                return
            url, delay = html.unescape(more.group(1)), float(more.group(2) or 0)

    async def metrics_poll(self, url: str) -> None:
        while True:
            await self.get("api metrics", url, accept_json=True)
            await asyncio.sleep(4)

    def job_url(self, job: str) -> str:
        return f"/jobs/{job}/"

    def list_url(self) -> str:
        r = self.rng.random()
        if r < 0.25:
            return "/jobs/?status=running"
        if r < 0.4:
            return (
                f"/jobs/?status={self.rng.choice(['completed', 'failed', 'cancelled'])}&page={self.rng.randint(1, 5)}"
            )
        if r < 0.55:
            return f"/jobs/?cluster=hpc{self.rng.randint(0, 2)}"
        if r < 0.65:
            return f"/jobs/?q=train-{self.rng.randint(1, 99)}"
        if r < 0.75:
            return f"/jobs/?sort={self.rng.choice(['name', '-created', 'status'])}"
        if r < 0.85:
            return f"/jobs/?page={self.rng.randint(2, 20)}"
        return "/jobs/"

    def api_url(self) -> str:
        r = self.rng.random()
        if r < 0.3:
            return "/api/v1/jobs/?status=running"
        if r < 0.5:
            return f"/api/v1/jobs/?cluster=hpc{self.rng.randint(0, 2)}&limit=50"
        return "/api/v1/jobs/?limit=50"

    async def run(self, t_end: float, spread: float) -> None:
        await asyncio.sleep(self.rng.uniform(0, spread))
        open_job = self.data["running"][self.n % len(self.data["running"])] if self.data["running"] else None
        tab1 = await self.page("job", self.job_url(open_job)) if open_job else []
        tab2: list[asyncio.Task] = []
        try:
            while time.monotonic() < t_end:
                await asyncio.sleep(self.rng.uniform(10, 20))
                for task in tab2:
                    task.cancel()
                r = self.rng.random()
                if r < 0.25:
                    tab2 = await self.page("home", "/")
                elif r < 0.55:
                    tab2 = await self.page("jobs list", self.list_url())
                elif r < 0.8:
                    job = self.rng.choice(self.data["others"] + self.data["running"])
                    tab2 = await self.page("job", self.job_url(job))
                else:
                    await self.get("api list", self.api_url(), accept_json=True)
                    tab2 = []
        finally:
            for task in tab1 + tab2:
                task.cancel()
            await asyncio.gather(*tab1, *tab2, return_exceptions=True)

    async def run_closed(self, t_end: float, spread: float) -> None:
        """The issue's first pattern: the next request as soon as the last answered."""
        await asyncio.sleep(self.rng.uniform(0, spread))
        job = self.data["running"][0] if self.data["running"] else self.data["others"][0]
        while time.monotonic() < t_end:
            await self.get("page home", "/")
            await self.get("page jobs list", self.list_url())
            await self.get("page job", self.job_url(job))
            await self.get("api list", self.api_url(), accept_json=True)
            await self.get("poll job", f"{self.job_url(job)}?live=0", htmx=True)


async def load(args, base: str, people: list[dict], stats: Stats, mutator: Mutator, live: LiveJobs | None) -> None:
    import aiohttp

    # aiohttp rather than httpx: the client shares the 2 cores with the portal, and aiohttp
    # spends less CPU per request (see bench/README.md). Idle connections are dropped after
    # 4 s, before gunicorn's keep-alive (5 s) closes them under a request (a browser retries
    # such a request; this client would count an error).
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4)
    timeout = aiohttp.ClientTimeout(total=args.timeout)  # the whole answer, not one read
    rng = random.Random(args.seed)
    async with aiohttp.ClientSession(
        base_url=base, connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as client:
        start = time.monotonic()
        stats.window = (start + args.warmup, start + args.warmup + args.duration)
        t_end = stats.window[1]
        users = [
            User(i, d, client, stats, random.Random(rng.random()), args.timeout, mixed=live is not None)
            for i, d in enumerate(people)
        ]
        spread = 15.0
        runner = (lambda u: u.run_closed(t_end, spread)) if args.closed_loop else (lambda u: u.run(t_end, spread))
        tasks = [asyncio.create_task(runner(u)) for u in users]

        async def change():
            while time.monotonic() < t_end:
                await asyncio.to_thread(mutator.change, rng)
                await asyncio.sleep(1)

        changer = asyncio.create_task(change()) if not args.closed_loop and args.changes_per_second > 0 else None

        async def grow():
            while time.monotonic() < t_end:
                try:
                    await asyncio.to_thread(live.grow, rng)
                except Exception as exc:  # noqa: BLE001 - say it, go on: the load is what is measured
                    c.say(f"  growing the logs and runs failed: {exc}")
                await asyncio.sleep(1)

        grower = asyncio.create_task(grow()) if live is not None and not args.closed_loop else None

        async def watch_lag():
            # A client starved of CPU measures its own delay as the server's: say how late it runs.
            while time.monotonic() < t_end:
                t = time.monotonic()
                await asyncio.sleep(0.1)
                if stats.counts(t):
                    stats.lag.append(time.monotonic() - t - 0.1)

        lag = asyncio.create_task(watch_lag())
        progress_at = start
        while time.monotonic() < t_end:
            await asyncio.sleep(1)
            if time.monotonic() - progress_at >= 30:
                progress_at = time.monotonic()
                done = sum(len(v) for v in stats.times.values())
                c.say(f"  t={progress_at - start:.0f}s requests counted so far {done}; {c.load()}")
        await asyncio.wait(tasks, timeout=args.timeout + 5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if changer:
            changer.cancel()
        if grower:
            grower.cancel()
        lag.cancel()


def report(
    stats: Stats,
    *,
    seconds: float,
    portal_cpu: float,
    client_cpu: float,
    machine_cpu: float,
    loads,
    changes,
    sshd_cpu: float = 0.0,
    mlflow_cpu: float = 0.0,
) -> None:
    total = sum(len(v) for v in stats.times.values())
    errors = sum(len(v) for v in stats.errors.values())
    everything = [t for v in stats.times.values() for t in v]
    c.say("")
    c.say(
        f"{'request':<18} {'count':>7} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'errors':>6}  statuses"
    )
    for kind in sorted(stats.times):
        times = stats.times[kind]
        statuses = " ".join(f"{s}:{n}" for s, n in sorted(stats.statuses[kind].items()))
        c.say(
            f"{kind:<18} {len(times):>7} {len(times) / seconds:>7.1f} {c.percentile(times, 50) * 1000:>8.1f} "
            f"{c.percentile(times, 95) * 1000:>8.1f} {c.percentile(times, 99) * 1000:>8.1f} {max(times) * 1000:>8.1f} "
            f"{len(stats.errors[kind]):>6}  {statuses}"
        )
    c.say(
        f"{'ALL':<18} {total:>7} {total / seconds:>7.1f} {c.percentile(everything, 50) * 1000:>8.1f} "
        f"{c.percentile(everything, 95) * 1000:>8.1f} {c.percentile(everything, 99) * 1000:>8.1f} "
        f"{max(everything, default=0) * 1000:>8.1f} {errors:>6}"
    )
    for kind, errs in stats.errors.items():
        seen: dict[str, int] = defaultdict(int)
        for e in errs:
            seen[e] += 1
        for e, n in sorted(seen.items(), key=lambda x: -x[1])[:3]:
            c.say(f"  error {kind}: {n}x {e}")
    c.say(
        f"window {seconds:.0f}s: portal CPU {portal_cpu:.1f}s ({portal_cpu / seconds * 100:.0f}% of one core, "
        f"{portal_cpu / max(total, 1) * 1000:.1f} ms per request), "
        f"load client CPU {client_cpu:.1f}s ({client_cpu / seconds * 100:.0f}%, "
        f"{client_cpu / max(total, 1) * 1000:.1f} ms per request), machine busy "
        f"{machine_cpu / seconds * 100:.0f}% of one core (of {os.cpu_count() * 100}%)"
    )
    c.say(
        f"client event loop late by p50 {c.percentile(stats.lag, 50) * 1000:.0f} ms, p95 "
        f"{c.percentile(stats.lag, 95) * 1000:.0f} ms, max {max(stats.lag, default=0) * 1000:.0f} ms "
        "(latencies above include it)"
    )
    c.say(
        f"polls held back by htmx (previous still in flight): {stats.queued}; job changes made: {changes}; "
        f"load average at start {loads[0]}, at end {loads[1]}"
    )
    if stats.log_reads:
        c.say(
            f"log tail reads: {stats.log_reads['with text']} found new text, {stats.log_reads['empty']} found none; "
            f"login node's sshd and its commands: {sshd_cpu:.1f}s of CPU "
            f"({sshd_cpu / max(sum(stats.log_reads.values()), 1) * 1000:.1f} ms per read); "
            f"the bench's MLflow server: {mlflow_cpu:.1f}s"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--jobs-per-user", type=int, default=500)
    parser.add_argument("--duration", type=float, default=120, help="measured seconds (default 120)")
    parser.add_argument("--warmup", type=float, default=20, help="seconds before measuring (default 20)")
    parser.add_argument("--changes-per-second", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--closed-loop", action="store_true", help="the issue's old pattern: no think time")
    parser.add_argument(
        "--pattern",
        choices=["mixed", "plain"],
        default="mixed",
        help="mixed (default): the open running job pages tail their logs over SSH and every --runs-every'th has "
        "an MLflow run; plain: the pattern before (no cluster, no MLflow, no log tail)",
    )
    parser.add_argument("--runs-every", type=int, default=2, help="mixed: every Nth open job has an MLflow run")
    parser.add_argument(
        "--mlflow-hangs",
        action="store_true",
        help="mixed: the portal's MLflow accepts connections and never answers (the runs are made in the bench's)",
    )
    parser.add_argument("--log-lines-per-second", type=float, default=20.0, help="mixed: stdout lines written per s")
    parser.add_argument("--points-per-second", type=float, default=5.0, help="mixed: runs gaining a point per s")
    parser.add_argument("--server-tree", type=Path, default=c.REPO, help="checkout whose portal is served")
    parser.add_argument("--python", type=Path, default=Path(sys.executable), help="its Python (venv)")
    parser.add_argument("--gunicorn", default=None, metavar="ARGS", help="gunicorn arguments instead of the tree's")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="no server: each request N times in-process, SQL and cProfile",
    )
    parser.add_argument(
        "--reuse-db",
        action="store_true",
        help="use the database --db-name that an earlier run kept (--keep-db) instead of making one",
    )
    c.add_db_args(parser)
    args = parser.parse_args()
    c.interruptible()
    env = c.cluster_env() if c.CLUSTER_ENV.exists() else {}
    tree = args.server_tree.resolve()
    c.say(
        f"portal_load: {args.users} users x {args.jobs_per_user} jobs, "
        f"{'closed loop' if args.closed_loop else 'open loop, think 10-20 s'}; server {tree}; {c.load()}"
    )
    hub = (
        existing_hub(db_name=args.db_name, pg_url=args.pg)
        if args.reuse_db
        else c.throwaway_hub(db_name=args.db_name, pg_url=args.pg, sqlite=args.sqlite, keep_db=args.keep_db, env=env)
    )
    mixed = args.pattern == "mixed" and not args.profile
    if mixed and not env:
        c.die("--pattern mixed reads the logs on the local cluster: it is not up (or pass --pattern plain)")
    mlflow_pid = None
    with ExitStack() as stack:
        stack.enter_context(hub)
        if mixed:
            uri = stack.enter_context(c.throwaway_mlflow(uri=args.mlflow, env=env))
            mlflow_pid = pid_listening_on(uri)
            from django.conf import settings

            # Django read the settings before the server started: this process's calls go there too.
            settings.AXLE_MLFLOW_TRACKING_URI = uri
            settings.AXLE_MLFLOW_USERNAME = ""
            os.environ.pop("AXLE_MLFLOW_USERNAME", None)
        from django.db import connections

        if args.reuse_db:
            people = people_of(args.users)
            c.say(f"  {len(people)} users of the earlier run, fresh sessions")
        else:
            people = make_data(users=args.users, jobs_per_user=args.jobs_per_user)
        running = [j for p in people for j in p["running"]]
        live = None
        if mixed:
            live = LiveJobs(
                env,
                people,
                runs_every=args.runs_every,
                lines=args.log_lines_per_second,
                points=args.points_per_second,
            )
            stack.callback(live.clean)
            live.prepare()
        elif running:
            from apps.jobs.models import Job

            # A database an earlier mixed run kept: its jobs' runs are in an MLflow that is gone.
            Job.objects.filter(uuid__in=running).update(mlflow_run_id="", mlflow_experiment_id="")
        if args.profile:
            sys.path.insert(0, str(tree))
            profile(people, args.profile, 40)
            return 0
        connections.close_all()
        if mixed and args.mlflow_hangs:
            # The bench keeps logging points to its MLflow; the portal asks one that hangs.
            os.environ["AXLE_MLFLOW_TRACKING_URI"] = hanging_mlflow()
            c.say(f"  the portal's MLflow hangs: {os.environ['AXLE_MLFLOW_TRACKING_URI']} never answers")
        log = Path(os.environ["AXLE_HOME"]) / "gunicorn.log"
        port = free_port()
        server = start_server(tree, args.python, gunicorn_args(tree, args.gunicorn), port, log)
        try:
            label = subprocess.run(
                ["git", "-C", str(tree), "log", "-1", "--format=%h %s"], capture_output=True, text=True
            ).stdout.strip()[:90]
            c.say(f"portal: {label}")
            stats = Stats()
            mutator = Mutator(args.changes_per_second, running)
            loop = asyncio.new_event_loop()
            marks = {}

            async def measured():
                async def mark(at: str, delay: float):
                    await asyncio.sleep(delay)
                    marks[at] = (
                        tree_cpu(server.pid),
                        time.process_time(),
                        c.machine_busy_seconds(),
                        c.load(),
                        sshd_cpu(),
                        tree_cpu(mlflow_pid) if mlflow_pid else 0.0,
                    )

                m1 = asyncio.create_task(mark("start", args.warmup))
                m2 = asyncio.create_task(mark("end", args.warmup + args.duration))
                await load(args, f"http://127.0.0.1:{port}", people, stats, mutator, live)
                await asyncio.gather(m1, m2)

            loop.run_until_complete(measured())
            loop.close()
            start, end = marks["start"], marks["end"]
            report(
                stats,
                seconds=args.duration,
                portal_cpu=end[0] - start[0],
                client_cpu=end[1] - start[1],
                machine_cpu=end[2] - start[2],
                loads=(start[3], end[3]),
                changes=mutator.changes,
                sshd_cpu=end[4] - start[4],
                mlflow_cpu=end[5] - start[5],
            )
            if live is not None:
                c.say(f"the jobs' output during the load: {live.lines} log lines, {live.points} new metric points")
            text = log.read_text(errors="replace")
            problems = [
                line for line in text.splitlines() if "CRITICAL" in line or "Traceback" in line or "ERROR" in line
            ]
            c.say(f"server log: {len(problems)} problem lines" + "".join(f"\n  {p[:200]}" for p in problems[:5]))
        finally:
            stop_server(server)
            connections.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
