#!/usr/bin/env python
"""Tracking cost: jobs_poll() over N active jobs (default 10,000), K cycles (default 5).

Set-up: N separate held jobs are put on the cluster by one SSH command running a shell loop
of sbatch (not an array: N real jobs), and N hub Job rows (status pending, Slurm job id,
grant, cluster, owner, unique marker) are bulk-created. Then each cycle of jobs_poll() is
measured: Slurm calls, jobs tracked, wall seconds, CPU seconds of the hub process, of
slurmctld, and of the rest of the machine (sshd, squeue, PostgreSQL, anything else running).

Afterwards every job of the run is cancelled by its unique name and the database dropped.

    .venv/bin/python bench/track_rate.py [--jobs 10000] [--cycles 5] [--site /var/lib/axle-lists]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c  # noqa: E402

# $0 is the job name, "$@" a batch of numbers from xargs. sbatch is retried when slurmctld is
# too busy to answer; an ambiguous failure may leave an extra job, which the name still finds.
LOOP = r"""
name=$1 n=$2 par=$3
seq "$n" | xargs -P "$par" -n 25 sh -c '
for i; do
  for try in 1 2 3 4 5; do
    if out=$(sbatch --parsable --hold --job-name="$0" --partition=debug --time=1 --output=/dev/null --wrap=true 2>&1)
    then echo "$out"; break
    fi
    echo "sbatch failed (try $try): $out"; sleep 1
  done
done' "$name"
"""

SCRIPT = "#!/bin/bash\ntrue\n"
JOB_ID = re.compile(r"^(\d+)(;.*)?$")


def submit_held(ssh, n: int, name: str, parallel: int, every: int) -> list[str]:
    """One SSH command; its output (one job id per line) is read as it comes."""
    ssh.connect()
    channel = ssh._client.get_transport().open_session()  # the bench streams; SSHClient.run collects
    channel.set_combine_stderr(True)
    channel.exec_command(shlex.join(["/bin/sh", "-c", LOOP, "sh", name, str(n), str(parallel)]))
    channel.shutdown_write()
    ids: list[str] = []
    complaints = 0
    started = time.monotonic()
    for line in channel.makefile("r"):
        line = line.strip()
        match = JOB_ID.match(line)
        if match:
            ids.append(match.group(1))
            if len(ids) % every == 0 or len(ids) == n:
                elapsed = time.monotonic() - started
                c.say(f"  sbatch loop: {len(ids)}/{n} jobs, {elapsed:.0f}s, {len(ids) / elapsed:.1f} jobs/s")
        elif line:
            complaints += 1
            if complaints <= 10:
                c.say(f"  cluster said: {line}")
    status = channel.recv_exit_status()
    channel.close()
    if status != 0 or complaints:
        c.say(f"  the loop exited with {status}; {complaints} complaints")
    return ids


def bulk_rows(user, cluster, grant, name: str, slurm_ids: list[str]) -> None:
    from django.utils import timezone

    from apps.jobs.models import Job

    now = timezone.now()
    sha = hashlib.sha256(SCRIPT.encode()).hexdigest()
    rows = []
    for sid in slurm_ids:
        u = uuid.uuid4()
        workdir = f"{grant.job_root}/{u}"
        rows.append(
            Job(
                uuid=u,
                owner=user,
                grant=grant,
                cluster=cluster,
                name=name,
                status=Job.Status.PENDING,
                script=SCRIPT,
                script_sha256=sha,
                parameters={},
                effective_request={"partition": "debug", "nodes": 1, "time_minutes": 1},
                hub_args=[f"--output={workdir}/slurm-%j.out", f"--error={workdir}/slurm-%j.err"],
                cluster_username=grant.cluster_username,
                marker=f"axle-{u.hex}",
                workdir=workdir,
                stdout_path=f"{workdir}/slurm-%j.out",
                stderr_path=f"{workdir}/slurm-%j.err",
                slurm_job_id=sid,
                submitted_at=now,
                attempts=1,
            )
        )
    Job.objects.bulk_create(rows, batch_size=1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="active jobs to track (default 10000)")
    parser.add_argument("--name-prefix", default="axlebench", help="job name prefix on the cluster")
    parser.add_argument("--cycles", type=int, default=5, help="jobs_poll() cycles to measure (default 5)")
    parser.add_argument("--transport", choices=["ssh", "rest"], default="ssh", help="the hub's cluster transport")
    parser.add_argument("--parallel", type=int, default=2, help="parallel sbatch loops on the cluster (default 2)")
    parser.add_argument("--progress", type=int, default=100, help="print progress every N jobs (default 100)")
    parser.add_argument(
        "--profile",
        nargs="?",
        type=int,
        const=0,
        metavar="CYCLE",
        help="profile one cycle (default the last) and print the top functions",
    )
    parser.add_argument(
        "--site",
        metavar="STACK_DIR",
        default=os.environ.get("AXLE_BENCH_SITE"),
        help="the local site to use, by its AXLE_STACK_DIR (default: AXLE_BENCH_SITE, else the shared "
        "/var/lib/axle); a private one keeps 10,000 held jobs off the cluster others test on",
    )
    c.add_db_args(parser)
    args = parser.parse_args()
    if args.jobs < 1 or args.cycles < 1:
        parser.error("--jobs and --cycles must be at least 1")

    c.interruptible()
    c.use_site(args.site)
    env = c.cluster_env()
    if args.tcp_nodelay:
        c.tcp_nodelay()
    ssh = c.check_cluster(env)
    c.Waits.install(env)
    name = f"{args.name_prefix}-track-{c.run_id()}"
    ctld = c.pids_named("slurmctld")
    c.say(
        f"track_rate: {args.jobs} held jobs named {name}, {args.cycles} cycles over {args.transport}; "
        f"{c.load()}; slurmctld pid {ctld or 'not visible'}"
    )

    rows: list[dict] = []
    hub_label = "?"
    setup_seconds = 0.0
    try:
        with (
            c.throwaway_mlflow(uri=args.mlflow, env=env, login=args.mlflow_login),
            c.throwaway_hub(db_name=args.db_name, pg_url=args.pg, sqlite=args.sqlite, keep_db=args.keep_db, env=env),
        ):
            from django.db.models import Count

            from apps.clusters import transport
            from apps.jobs.models import Job
            from apps.jobs.services import jobs_poll

            user, cluster, grant = c.hub_cluster(env, args.transport)
            if not cluster.state:
                from apps.clusters.tasks import cluster_refresh_health

                cluster_refresh_health(cluster.pk)
                cluster.refresh_from_db()
            hub_label = c.describe_hub()
            c.say(f"hub under test: {hub_label}")
            t0 = time.monotonic()
            c.say(f"setting up: {args.jobs} held jobs by one remote sbatch loop ({args.parallel} in parallel)")
            ids = submit_held(ssh, args.jobs, name, args.parallel, args.progress)
            submit_seconds = time.monotonic() - t0
            if len(ids) < args.jobs:
                c.say(f"  WARNING: only {len(ids)} of {args.jobs} jobs were submitted; tracking those")
            t1 = time.monotonic()
            bulk_rows(user, cluster, grant, name, ids)
            rows_seconds = time.monotonic() - t1
            setup_seconds = time.monotonic() - t0
            c.say(
                f"  set up in {setup_seconds:.0f}s: sbatch loop {submit_seconds:.0f}s "
                f"({len(ids) / submit_seconds:.1f} jobs/s), bulk_create {rows_seconds:.1f}s"
            )

            c.say(
                "wall: the cycle's duration; squeue: the hub waiting for the squeue command; DB: the hub waiting "
                "for its SQL statements and COMMITs (counts in brackets); CPU: seconds of the hub process, "
                "slurmctld, PostgreSQL (all its processes) and everything else on the machine (sshd, squeue, "
                "other work)"
            )
            c.say(
                f"{'cycle':>5} {'slurm calls':>11} {'jobs':>6} {'examined':>8} {'errors':>6} {'wall s':>7} "
                f"{'squeue s':>8} "
                f"{'DB s (stmts/commits)':>22} {'hub CPU s':>9} {'slurmctld CPU':>13} {'postgres CPU':>12} "
                f"{'other CPU':>9}"
            )
            for cycle in range(1, args.cycles + 1):
                profiler = None
                if args.profile is not None and cycle == (args.profile or args.cycles):
                    import cProfile

                    profiler = cProfile.Profile()
                ctl0 = sum(c.cpu_seconds(p) or 0 for p in ctld)
                pg0 = c.cpu_of_named("postgres")
                busy0 = c.machine_busy_seconds()
                waits = c.Waits.snapshot()
                cpu0, wall0 = time.process_time(), time.monotonic()
                if profiler:
                    profiler.enable()
                with c.Waits.sql():
                    stats = jobs_poll()
                if profiler:
                    profiler.disable()
                wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
                ctl = sum(c.cpu_seconds(p) or 0 for p in ctld) - ctl0
                busy = c.machine_busy_seconds() - busy0
                pg = max(c.cpu_of_named("postgres") - pg0, 0.0)  # backends that ended meanwhile drop out
                waited = c.Waits.since(waits)
                sql_calls, sql_s = waited.get("db (SQL)", (0, 0.0))
                commits, commit_s = waited.get("db (COMMIT)", (0, 0.0))
                sql_s += commit_s
                squeue_s = sum(sec for kind, (_, sec) in waited.items() if kind.startswith(("ssh", "http")))
                row = {
                    "cycle": cycle,
                    "calls": stats.slurm_calls,
                    "jobs": stats.jobs,
                    # jobs loaded and compared (a hub from before the steady-cycle skip: all)
                    "examined": getattr(stats, "examined", stats.jobs),
                    "errors": stats.errors,
                    "wall": wall,
                    "cpu": cpu,
                    "ctld": ctl,
                    "pg": pg,
                    "other": max(busy - cpu - ctl - pg, 0.0),
                    "squeue": squeue_s,
                    "sql": sql_s,
                    "sql_calls": sql_calls,
                    "commits": commits,
                }
                rows.append(row)
                c.say(
                    f"{cycle:>5} {row['calls']:>11} {row['jobs']:>6} {row['examined']:>8} {row['errors']:>6} "
                    f"{wall:>7.2f} {squeue_s:>8.2f} "
                    f"{sql_s:>7.2f} ({sql_calls:>5}/{commits:>5}) {cpu:>9.2f} {ctl:>13.2f} {pg:>12.2f} "
                    f"{row['other']:>9.2f}"
                )
                if profiler:
                    import pstats

                    pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(25)
                    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(20)
            states = dict(Job.objects.filter(name=name).order_by().values_list("slurm_state").annotate(n=Count("id")))
            c.say(f"  hub rows by Slurm state after the last cycle: {states}")
            getattr(transport, "close_all", lambda: None)()
    finally:
        c.say("cleaning up")
        c.cancel_named(ssh, name, wait=300)
        ssh.close()

    if not rows:
        return 1
    n = len(rows)
    avg = {
        k: sum(r[k] for r in rows) / n
        for k in ("calls", "wall", "cpu", "ctld", "pg", "other", "sql_calls", "commits", "sql")
    }
    c.say("")
    c.say(f"== track_rate: {rows[0]['jobs']} active jobs, {n} cycles, hub {hub_label}; {c.load()}")
    c.say(
        f"per cycle (mean): {avg['calls']:.1f} Slurm calls, {avg['wall']:.2f}s wall, {avg['cpu']:.2f} hub CPU s, "
        f"{avg['ctld']:.2f} slurmctld CPU s, {avg['pg']:.2f} PostgreSQL CPU s, {avg['other']:.2f} other CPU s, "
        f"DB waits {avg['sql']:.2f}s for {avg['sql_calls']:.0f} SQL statements and {avg['commits']:.0f} COMMITs; "
        f"set-up {setup_seconds:.0f}s"
    )
    return 0 if all(r["errors"] == 0 and r["jobs"] == rows[0]["jobs"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
