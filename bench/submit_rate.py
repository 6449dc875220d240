#!/usr/bin/env python
"""Submission rate: N held jobs through the hub, and N through a plain sbatch loop.

(a) hub:   job_create + job_submit per job, the whole path a submission takes (validation
           against the grant, Job row, audit events, queued task, compare-and-swap
           transitions, mkdir of the job folder and sbatch over the cluster's transport);
(b) plain: `sbatch --parsable --hold` with the same script on stdin, one command per job,
           over ONE SSH connection opened beforehand (the hub's own SSHClient).

(c) with --baseline ssh-per-job|both: one OpenSSH `ssh ... sbatch` process per job (a new
           connection, handshake and login each time).

The hub side runs --mode batched (create all, then the tasks), concurrent (a worker thread
runs the tasks while the jobs are created, as the API and the worker do), api-batch (as
concurrent, the jobs created 100 at a time as POST /api/v1/jobs/batch/ does) or per-job.

Prints the rates, their ratios and p50/p95 latency per job, then cancels every job it made
(they carry a unique job name) and drops its throwaway database.

    .venv/bin/python bench/submit_rate.py [--jobs 1000] [--transport ssh|rest] [--mode api-batch]
        [--baseline both --baseline-jobs 100]
"""

from __future__ import annotations

import argparse
import cProfile
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c  # noqa: E402

SCRIPT = """#!/bin/bash
#SBATCH --partition=debug
#SBATCH --hold
#SBATCH --time=1
#SBATCH --ntasks=1
true
"""


PROFILE = False


def progress(label: str, done: int, total: int, started: float, every: int) -> None:
    if done % every == 0 or done == total:
        elapsed = time.monotonic() - started
        c.say(f"  {label}: {done}/{total} jobs, {elapsed:.1f}s, {done / elapsed:.1f} jobs/s")


def run_plain(ssh, n: int, name: str, every: int) -> tuple[float, list[float], int]:
    """One `.run` per job over one open connection. Returns wall seconds, latencies, failures."""
    args = ["sbatch", "--parsable", "--hold", f"--job-name={name}", "--output=/dev/null"]
    ssh.connect()
    latencies: list[float] = []
    failures = 0
    script = SCRIPT.encode()
    started = time.monotonic()
    for i in range(1, n + 1):
        t0 = time.monotonic()
        result = ssh.run(args, stdin=script)
        latencies.append(time.monotonic() - t0)
        if result.exit_status != 0 or not result.out.strip().split(";")[0].isdigit():
            failures += 1
            if failures <= 3:
                c.say(f"  plain sbatch failed: {result.err or result.out!r}")
        progress("plain", i, n, started, every)
    return time.monotonic() - started, latencies, failures


def run_ssh_per_job(env: dict[str, str], n: int, name: str, every: int) -> tuple[float, list[float], int]:
    """One OpenSSH `ssh` process per job (a new connection, handshake and login each time),
    running `sbatch` with the script on stdin: what a script that loops over
    `ssh login sbatch` costs. Returns wall seconds, latencies, failures."""
    import os
    import shlex
    import shutil
    import subprocess
    import tempfile

    if not shutil.which("ssh"):
        c.die("no `ssh` command (OpenSSH client) for --baseline ssh-per-job")
    folder = Path(tempfile.mkdtemp(prefix="axle-bench-ssh-"))
    try:
        key = folder / "id_ed25519"  # a private copy: ssh refuses a key readable by others
        key.write_bytes((Path(env["AXLE_LOCAL_KEYS_DIR"]) / c.BENCH_USER / "id_ed25519").read_bytes())
        os.chmod(key, 0o600)
        command = [
            "ssh",
            "-p",
            env.get("AXLE_LOCAL_SSH_PORT", "2222"),
            "-i",
            str(key),
            "-o",
            f"UserKnownHostsFile={env['AXLE_LOCAL_SSH_KNOWN_HOSTS']}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ControlMaster=no",
            "-o",
            "ControlPath=none",
            "-F",
            "/dev/null",
            f"{c.BENCH_USER}@{env.get('AXLE_LOCAL_SSH_HOST', '127.0.0.1')}",
            # ssh hands the remote shell one string: quoted word by word.
            shlex.join(["sbatch", "--parsable", "--hold", f"--job-name={name}", "--output=/dev/null"]),
        ]
        latencies: list[float] = []
        failures = 0
        script = SCRIPT.encode()
        started = time.monotonic()
        for i in range(1, n + 1):
            t0 = time.monotonic()
            result = subprocess.run(command, input=script, capture_output=True, timeout=120)
            latencies.append(time.monotonic() - t0)
            out = result.stdout.decode(errors="replace").strip()
            if result.returncode != 0 or not out.split(";")[0].isdigit():
                failures += 1
                if failures <= 3:
                    c.say(f"  ssh sbatch failed: {result.stderr.decode(errors='replace')[-300:] or out!r}")
            progress("ssh per job", i, n, started, every)
        return time.monotonic() - started, latencies, failures
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_hub(user, cluster, n: int, name: str, every: int) -> tuple[float, list[float], list[float], list[float]]:
    """job_create + job_submit per job, each under the user's context as the API and the
    task worker would run them. Returns wall seconds and latencies (total, create, submit)."""
    from apps.core import context
    from apps.jobs.services import job_create, job_submit

    total, creates, submits = [], [], []
    started = time.monotonic()
    with c.Waits.sql():
        for i in range(1, n + 1):
            t0 = time.monotonic()
            with context.bind(actor_id=user.pk):
                job = job_create(user=user, cluster=cluster, name=name, script=SCRIPT, parameters={"BENCH_I": str(i)})
            t1 = time.monotonic()
            with context.bind(actor_id=user.pk):
                job_submit(job_id=job.pk)
            t2 = time.monotonic()
            total.append(t2 - t0)
            creates.append(t1 - t0)
            submits.append(t2 - t1)
            progress(f"hub ({cluster.transport})", i, n, started, every)
    return time.monotonic() - started, total, creates, submits


def run_hub_batched(user, cluster, n: int, name: str, every: int) -> tuple[float, list, list, list]:
    """job_create for every job (as the API records them), then the worker's job_submit
    task for each, in order: the first task of a grant takes a batch of its queued jobs
    (AXLE_SUBMIT_BATCH) and delivers it in one round trip; a task whose job an earlier
    batch took returns at once. Wall time covers both. Latency per job: from its creation
    to the end of the task that delivered it."""
    from apps.core import context
    from apps.jobs.models import Job
    from apps.jobs.services import job_create, job_submit

    creates, created_at = [], {}
    started = time.monotonic()
    with c.Waits.sql():
        for i in range(1, n + 1):
            t0 = time.monotonic()
            with context.bind(actor_id=user.pk):
                job = job_create(user=user, cluster=cluster, name=name, script=SCRIPT, parameters={"BENCH_I": str(i)})
            created_at[job.pk] = t0
            creates.append(time.monotonic() - t0)
        submits, total = [], []
        for done, pk in enumerate(created_at, 1):
            t1 = time.monotonic()
            with context.bind(actor_id=user.pk):
                job_submit(job_id=pk)
            t2 = time.monotonic()
            submits.append(t2 - t1)
            if t2 - t1 > 0.001 or done == 1:  # this task delivered a batch: every job in it ends now
                delivered = Job.objects.filter(pk__in=list(created_at), submitted_at__isnull=False).count()
                total += [t2 - created_at[p] for p in list(created_at)[len(total) : delivered]]
            progress(f"hub batched ({cluster.transport})", done, n, started, every)
    return time.monotonic() - started, total, creates, submits


def run_hub_concurrent(
    user, cluster, n: int, name: str, every: int, create_batch: int = 0, workers: int = 1
) -> tuple[float, list, list, list]:
    """As the API and the task worker run side by side: this thread creates the jobs one by
    one (`job_create`, as `POST /api/v1/jobs/` does), a second thread (the worker) runs each
    job's `job_submit` task as soon as it is queued, in order; the first task of a grant
    takes a batch of its queued jobs, later tasks find theirs taken. Wall time: from the
    first creation to the last job known to Slurm. Latency per job: from its creation to the
    end of the task that delivered it. With `create_batch`, the jobs are created that many at
    a time with `job_create_many` (as `POST /api/v1/jobs/batch/` does); job_create p50 is
    then a batch's time divided by its size. With `workers` > 1, that many worker threads take
    the tasks (as a qcluster's worker processes do, here sharing one interpreter)."""
    import queue
    import threading

    from django.db import connections

    from apps.core import context
    from apps.jobs.models import Job
    from apps.jobs.services import job_create, job_submit

    creates, created_at, submits, total = [], {}, [], []
    tasks: queue.Queue = queue.Queue()
    errors: list[BaseException] = []

    lock = threading.Lock()

    def worker() -> None:
        profile = cProfile.Profile() if PROFILE else None
        if profile:
            profile.enable()
        try:
            done = 0
            while (pk := tasks.get()) is not None:
                t1 = time.monotonic()
                with context.bind(actor_id=user.pk):
                    job_submit(job_id=pk)
                t2 = time.monotonic()
                submits.append(t2 - t1)
                if t2 - t1 > 0.001:  # this task delivered a batch: its jobs are known to Slurm now
                    known = Job.objects.filter(name=name, submitted_at__isnull=False).values_list("pk", flat=True)
                    with lock:
                        for p in set(known) - delivered:
                            if p in created_at:  # else its creation is being recorded: counted next time
                                delivered.add(p)
                                total.append(t2 - created_at[p])
                with lock:
                    done = len(submits)
                progress(f"hub worker ({cluster.transport})", done, n, started, every)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()
            if profile:
                profile.disable()
                profiles.append(profile)

    delivered: set[int] = set()
    profiles: list = []
    started = time.monotonic()
    threads = [threading.Thread(target=worker, name=f"bench-worker-{w}") for w in range(workers)]
    for thread in threads:
        thread.start()
    try:
        with c.Waits.sql():
            if create_batch:
                # As a client posting to /api/v1/jobs/batch/: job_create_many queues one task
                # per AXLE_SUBMIT_BATCH jobs; those tasks go to the worker.
                from django.conf import settings

                from apps.jobs.services import job_create_many

                size = max(1, getattr(settings, "AXLE_SUBMIT_BATCH", 100))
                for start in range(0, n, create_batch):
                    items = [
                        {"name": name, "script": SCRIPT, "parameters": {"BENCH_I": str(i)}}
                        for i in range(start, min(n, start + create_batch))
                    ]
                    t0 = time.monotonic()
                    with context.bind(actor_id=user.pk):
                        made = job_create_many(user=user, cluster=cluster, jobs=items)
                    spent = time.monotonic() - t0
                    for job in made:
                        created_at[job.pk] = t0
                        creates.append(spent / len(made))
                    for k in range(0, len(made), size):
                        tasks.put(made[k].pk)
            else:
                for _ in range(1, n + 1):
                    t0 = time.monotonic()
                    with context.bind(actor_id=user.pk):
                        job = job_create(
                            user=user,
                            cluster=cluster,
                            name=name,
                            script=SCRIPT,
                            parameters={"BENCH_I": str(len(creates))},
                        )
                    created_at[job.pk] = t0
                    creates.append(time.monotonic() - t0)
                    tasks.put(job.pk)
    finally:
        for _ in threads:
            tasks.put(None)
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    if profiles:
        import pstats

        c.say("-- profile of the worker thread (the deliveries), by cumulative time")
        pstats.Stats(profiles[0]).sort_stats("cumulative").print_stats(60)
        c.say("-- the same, by own time")
        pstats.Stats(profiles[0]).sort_stats("tottime").print_stats(30)
    return time.monotonic() - started, total, creates, submits


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per path (default 1000)")
    parser.add_argument(
        "--transport",
        choices=["ssh", "rest"],
        default="ssh",
        help="the hub's cluster transport (the plain loop is always sbatch over SSH)",
    )
    parser.add_argument("--order", choices=["plain-first", "hub-first"], default="plain-first")
    parser.add_argument(
        "--mode",
        choices=["batched", "concurrent", "api-batch", "per-job"],
        default="batched",
        help="batched: create all, then the worker's tasks deliver batches (default); "
        "concurrent: a worker thread runs the tasks while the jobs are being created, as the API and the "
        "worker do; api-batch: as concurrent, the jobs created --create-batch at a time with job_create_many "
        "(POST /api/v1/jobs/batch/); per-job: job_create + job_submit one job at a time",
    )
    parser.add_argument(
        "--create-batch", type=int, default=100, help="jobs per job_create_many call in --mode api-batch (default 100)"
    )
    parser.add_argument(
        "--baseline",
        choices=["plain", "ssh-per-job", "both"],
        default="plain",
        help="what the hub is compared with: plain = a sbatch loop over one SSH connection (default); "
        "ssh-per-job = one OpenSSH `ssh ... sbatch` process per job; both",
    )
    parser.add_argument(
        "--baseline-jobs",
        type=int,
        default=0,
        help="jobs for the ssh-per-job baseline (default: --jobs); its rate is per job",
    )
    parser.add_argument("--name-prefix", default="axlebench", help="job name prefix on the cluster")
    parser.add_argument(
        "--no-warm-up",
        dest="warm_up",
        action="store_false",
        help="skip the one job sent through the hub before timing (it makes the team's MLflow experiment)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker threads taking the submission tasks in --mode concurrent/api-batch (default 1; the "
        "stack's qcluster runs AXLE_WORKERS=4 processes, two of them held by the tracking loops). Threads "
        "share one interpreter and the process's memory of shared MLflow logins, worker processes do not",
    )
    parser.add_argument(
        "--profile", action="store_true", help="print a cProfile of the hub's threads (--mode concurrent/api-batch)"
    )
    parser.add_argument("--progress", type=int, default=100, help="print progress every N jobs (default 100)")
    c.add_db_args(parser)
    args = parser.parse_args()
    global PROFILE
    PROFILE = args.profile
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")

    c.interruptible()
    env = c.cluster_env()
    if args.tcp_nodelay:
        c.tcp_nodelay()
    ssh = c.check_cluster(env)
    c.SSHHandshakes.install()
    c.Waits.install(env)
    rid = c.run_id()
    plain_name, hub_name = f"{args.name_prefix}-plain-{rid}", f"{args.name_prefix}-hub-{rid}"
    sshjob_name = f"{args.name_prefix}-sshjob-{rid}"
    baselines = (
        ["plain", "sshjob"] if args.baseline == "both" else ["sshjob" if args.baseline == "ssh-per-job" else "plain"]
    )
    sshjob_n = args.baseline_jobs or args.jobs
    c.say(
        f"submit_rate: {args.jobs} held jobs per path, hub transport {args.transport}, "
        f"job names {plain_name} / {hub_name}; {c.load()}"
    )

    results: dict[str, dict] = {}
    with (
        c.throwaway_mlflow(uri=args.mlflow, env=env, login=args.mlflow_login),
        c.throwaway_hub(db_name=args.db_name, pg_url=args.pg, sqlite=args.sqlite, keep_db=args.keep_db, env=env),
    ):
        from django.db.models import Count

        from apps.jobs.models import Job

        user, cluster, grant = c.hub_cluster(env, args.transport)
        if not cluster.state:
            from apps.clusters.tasks import cluster_refresh_health

            cluster_refresh_health(cluster.pk)  # the partitions validation checks against
            cluster.refresh_from_db()
        if args.warm_up:
            # A running hub has made its team's MLflow experiment once (1-2 s on this MLflow) and
            # holds its connections; the plain loop's connection is open before its timing too.
            from apps.core import context
            from apps.jobs.services import job_create, job_submit

            warm_name = f"{args.name_prefix}-warm-{rid}"
            with context.bind(actor_id=user.pk):
                warm = job_create(user=user, cluster=cluster, name=warm_name, script=SCRIPT, parameters={})
                job_submit(job_id=warm.pk)
            c.cancel_named(ssh, warm_name)
            c.say(f"warm-up: one job through the hub ({Job.objects.get(name=warm_name).status})")
        hub_label = c.describe_hub()
        c.say(f"hub under test: {hub_label}")
        workdirs: list[str] = []
        try:
            for phase in [*baselines, "hub"] if args.order == "plain-first" else ["hub", *baselines]:
                if phase == "sshjob":
                    c.say(f"(c) one OpenSSH `ssh ... sbatch` process per job, {sshjob_n} jobs")
                    wall, lat, failures = run_ssh_per_job(env, sshjob_n, sshjob_name, args.progress)
                    results["sshjob"] = {"wall": wall, "lat": lat, "failures": failures, "n": sshjob_n}
                    c.cancel_named(ssh, sshjob_name)
                elif phase == "plain":
                    c.say(f"(b) plain sbatch loop over one SSH connection, {args.jobs} jobs")
                    wall, lat, failures = run_plain(ssh, args.jobs, plain_name, args.progress)
                    results["plain"] = {"wall": wall, "lat": lat, "failures": failures}
                    c.cancel_named(ssh, plain_name)
                else:
                    c.say(f"(a) hub: job_create + job_submit over {args.transport}, {args.jobs} jobs")
                    before = c.SSHHandshakes.count
                    waits = c.Waits.snapshot()
                    cpu0 = time.process_time()
                    runner = {
                        "batched": run_hub_batched,
                        "concurrent": lambda *a: run_hub_concurrent(*a, workers=args.workers),
                        "api-batch": lambda *a: run_hub_concurrent(
                            *a, create_batch=args.create_batch, workers=args.workers
                        ),
                        "per-job": run_hub,
                    }[args.mode]
                    wall, lat, creates, submits = runner(user, cluster, args.jobs, hub_name, args.progress)
                    jobs = Job.objects.filter(name=hub_name)
                    workdirs = list(jobs.values_list("workdir", flat=True))
                    by_status = dict(jobs.order_by().values_list("status").annotate(n=Count("id")))
                    failed = jobs.exclude(status=Job.Status.PENDING)
                    for job in failed[:3]:
                        c.say(f"  hub job {job.pk} is {job.status}: {job.failure_message or job.last_error}")
                    results["hub"] = {
                        "wall": wall,
                        "lat": lat,
                        "creates": creates,
                        "submits": submits,
                        "failures": failed.count(),
                        "by_status": by_status,
                        "handshakes": c.SSHHandshakes.count - before,
                        "waits": c.Waits.since(waits),
                        "cpu": time.process_time() - cpu0,
                    }
                    c.cancel_named(ssh, hub_name)
        finally:
            # Whatever happened above: nothing of this run stays queued on the cluster.
            for name in (plain_name, hub_name, sshjob_name):
                if c.count_named(ssh, name):
                    c.cancel_named(ssh, name)
            if workdirs:
                # The hub made one (empty: the jobs never ran) folder per job; remove exactly those.
                ssh.run(
                    ["xargs", "-0", "rmdir", "--ignore-fail-on-non-empty", "--"],
                    stdin="\0".join(workdirs).encode(),
                    timeout=300,
                )

    ssh.close()
    n = args.jobs
    hub = results["hub"]
    hub_rate = n / hub["wall"]
    plain = results.get("plain")
    plain_rate = n / plain["wall"] if plain else None
    c.say("")
    c.say(
        f"== submit_rate: {n} held jobs each, hub {hub_label}, mode {args.mode}, {args.workers} worker(s); {c.load()}; "
        f"tcp_nodelay {args.tcp_nodelay}"
    )
    if plain:
        c.say(
            f"plain sbatch, one SSH connection : {plain_rate:7.1f} jobs/s  ({plain['wall']:.1f}s)  "
            f"p50 {ms(c.percentile(plain['lat'], 50))}  p95 {ms(c.percentile(plain['lat'], 95))}  "
            f"failures {plain['failures']}"
        )
    sshjob = results.get("sshjob")
    if sshjob:
        sshjob_rate = sshjob["n"] / sshjob["wall"]
        c.say(
            f"one `ssh ... sbatch` per job     : {sshjob_rate:7.1f} jobs/s  ({sshjob['wall']:.1f}s for {sshjob['n']})  "
            f"p50 {ms(c.percentile(sshjob['lat'], 50))}  p95 {ms(c.percentile(sshjob['lat'], 95))}  "
            f"failures {sshjob['failures']}"
        )
    c.say(
        f"hub job_create+job_submit ({args.transport:>4}): {hub_rate:7.1f} jobs/s  ({hub['wall']:.1f}s)  "
        f"p50 {ms(c.percentile(hub['lat'], 50))}  p95 {ms(c.percentile(hub['lat'], 95))}  "
        f"not pending {hub['failures']}"
    )
    c.say(
        f"  of which job_create            : p50 {ms(c.percentile(hub['creates'], 50))}  "
        f"p95 {ms(c.percentile(hub['creates'], 95))}"
    )
    c.say(
        f"  of which job_submit            : p50 {ms(c.percentile(hub['submits'], 50))}  "
        f"p95 {ms(c.percentile(hub['submits'], 95))}"
    )
    delivery = sum(hub["submits"])
    c.say(
        f"  delivery alone (job_submit tasks): {n / delivery:7.1f} jobs/s  ({delivery:.1f}s)"
        + (f"; ratio delivery/plain {n / delivery / plain_rate:.2f}" if plain else "")
    )
    c.say(f"  SSH handshakes on the hub path : {hub['handshakes']} ({hub['handshakes'] / n:.2f} per job)")
    waited = 0.0
    for kind, (calls, seconds) in sorted(hub["waits"].items()):
        waited += seconds
        c.say(f"  waiting on {kind:<19}: {calls / n:.1f} calls/job, {ms(seconds / n)}/job")
    if waited <= hub["wall"]:
        c.say(f"  the rest (checks, audit, Python): {ms((hub['wall'] - waited) / n)}/job")
    else:
        # Calls made concurrently (slurmrestd's, SUBMIT_PARALLEL) overlap: their sum is more than the wall.
        c.say(
            f"  the rest                       : – (the waits overlap: {ms(waited / n)}/job summed "
            f"against {ms(hub['wall'] / n)}/job of wall time)"
        )
    c.say(f"  hub process CPU                : {ms(hub['cpu'] / n)}/job (includes SSH encryption, the DB driver)")
    c.say(f"  hub job states                 : {hub['by_status']}")
    left = sum(count for status, count in hub["by_status"].items() if status != "pending")
    if left:
        c.say(f"  NOT COMPARABLE: the hub left {left} of {n} jobs not pending; no ratio is printed")
        return 1
    if plain:
        c.say(
            f"ratio hub/plain (rate)           : {hub_rate / plain_rate:.2f}  "
            f"(the hub path takes {plain_rate / hub_rate:.1f}x the plain loop's time)"
        )
    if sshjob:
        c.say(f"ratio hub/ssh-per-job (rate)     : {hub_rate / sshjob_rate:.1f}x")
    failed = hub["failures"] + sum(results[k]["failures"] for k in ("plain", "sshjob") if k in results)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
