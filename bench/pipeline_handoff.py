#!/usr/bin/env python
"""Pipeline hand-off: a chain of N short steps (default 10) run through Axle against the same
chain submitted by hand with `afterok`; the gap between one step's end and the next one's
start, from `sacct`, for both.

(a) axle:   a pipeline file of N chained steps in a git repository on the cluster, registered
            and run with `pipeline_run_start` + one `pipeline_run_advance` (which submits every
            step at once with --dependency=afterok:<previous> --kill-on-invalid-dep=yes, as the
            task worker does); the bench then only waits for Slurm.
(b) native: the same N scripts, `sbatch --parsable --dependency=afterok:<previous>
            --kill-on-invalid-dep=yes` by hand over one SSH connection.

Each step sleeps `--sleep` seconds (default 2). sacct's Start and End are whole seconds, so
each gap is within ±1 s; the figures are over N-1 hand-offs.

    .venv/bin/python bench/pipeline_handoff.py [--steps 10] [--sleep 2] [--transport ssh|rest]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c  # noqa: E402

STEP = """#!/bin/bash
#SBATCH --partition=debug
#SBATCH --time=1
#SBATCH --ntasks=1
#SBATCH --mem=50M
sleep {sleep}
"""


def pipeline_file(n: int) -> str:
    lines = ["name: handoff", "steps:"]
    for i in range(n):
        lines += [f"  s{i}:", "    script: step.sbatch", "    cache: false"]
        if i:
            lines.append(f"    needs: [s{i - 1}]")
    return "\n".join(lines) + "\n"


def make_repo(ssh, folder: str, n: int, sleep: float) -> None:
    files = ssh.files
    files.mkdir(folder)
    files.write(f"{folder}/axle-pipeline.yaml", pipeline_file(n).encode())
    files.write(f"{folder}/step.sbatch", STEP.format(sleep=sleep).encode(), mode=0o755)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@axle.invalid", "-C", folder]
    for args in (["init", "--quiet", "--initial-branch=main"], ["add", "--all"], ["commit", "--quiet", "-m", "bench"]):
        result = ssh.run([*git, *args], timeout=60)
        if result.exit_status != 0:
            c.die(f"git {args[0]} failed in {folder}: {result.err}", 1)


def run_native(ssh, n: int, sleep: float, name: str, workdir: str) -> list[str]:
    script = STEP.format(sleep=sleep).encode()
    ids: list[str] = []
    for _ in range(n):
        args = ["sbatch", "--parsable", f"--job-name={name}", f"--chdir={workdir}", "--output=/dev/null"]
        if ids:
            args += [f"--dependency=afterok:{ids[-1]}", "--kill-on-invalid-dep=yes"]
        result = ssh.run(args, stdin=script)
        if result.exit_status != 0:
            c.die(f"native sbatch failed: {result.err or result.out!r}", 1)
        ids.append(result.out.strip().split(";")[0])
    return ids


def run_axle(user, grant, repo: str, name: str, folders: list[str], submitted: list[str]) -> tuple[list[str], float]:
    from apps.accounts.models import Membership, Team
    from apps.pipelines import services
    from apps.pipelines.models import StepRun

    team = Team.objects.create(name=f"bench-{uuid.uuid4().hex[:6]}")
    Membership.objects.create(user=user, team=team, role=Membership.Role.MEMBER)
    pipeline = services.pipeline_create(user=user, team=team, name=name, grant=grant, repo_url=repo, branch="main")
    started = time.monotonic()
    run = services.pipeline_run_start(pipeline=pipeline, actor=user, trigger="user")
    services.pipeline_run_advance(run_id=run.pk)
    submit_seconds = time.monotonic() - started
    steps = list(run.steps.select_related("job").order_by("position"))
    folders += [run.folder, *(s.job.workdir for s in steps if s.job)]
    submitted += [s.job.slurm_job_id for s in steps if s.job and s.job.slurm_job_id]
    missing = [
        (s.name, s.state, s.message, s.job and (s.job.status, s.job.last_error, s.job.failure_message))
        for s in steps
        if s.state != StepRun.State.SUBMITTED or not s.job.slurm_job_id
    ]
    if missing:
        run.refresh_from_db()
        c.die(f"steps not on Slurm after one pass: {missing} (run {run.status}: {run.message})", 1)
    return [s.job.slurm_job_id for s in steps], submit_seconds


def wait_accounted(ssh, ids: list[str], timeout: float) -> list[tuple[str, datetime, datetime]]:
    """(state, start, end) of each job once sacct has all of them ended."""
    deadline = time.monotonic() + timeout
    while True:
        out = ssh.run(
            ["sacct", "--noheader", "--parsable2", "-X", "--jobs", ",".join(ids), "--format=JobID,State,Start,End"],
            timeout=120,
        ).out
        rows = {}
        for line in out.splitlines():
            job_id, state, start, end = line.split("|")
            rows[job_id] = (state, start, end)
        if all(j in rows and rows[j][2] not in ("Unknown", "") for j in ids):
            return [(rows[j][0], datetime.fromisoformat(rows[j][1]), datetime.fromisoformat(rows[j][2])) for j in ids]
        if time.monotonic() > deadline:
            c.die(f"the chain did not end in {timeout:.0f} s: {rows}", 1)
        time.sleep(2)


def gaps(rows) -> list[float]:
    return [(rows[i + 1][1] - rows[i][2]).total_seconds() for i in range(len(rows) - 1)]


def describe(label: str, g: list[float]) -> str:
    return (
        f"{label}: mean {statistics.mean(g):5.2f} s, median {statistics.median(g):4.1f} s, "
        f"max {max(g):4.1f} s over {len(g)} hand-offs  {g}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--sleep", type=float, default=2)
    parser.add_argument("--transport", choices=["ssh", "rest"], default="ssh")
    c.add_db_args(parser)
    args = parser.parse_args()
    c.interruptible()
    env = c.cluster_env()
    ssh = c.check_cluster(env)
    rid = c.run_id()
    scratch = env["AXLE_LOCAL_SCRATCH_ROOT"].rstrip("/") + f"/{c.BENCH_USER}/axlebench-{rid}"
    native_name, axle_name = f"axlebench-native-{rid}", f"axlebench-axle-{rid}"
    timeout = 120 + args.steps * (args.sleep + 30)
    with (
        c.throwaway_mlflow(uri=args.mlflow, env=env, login=args.mlflow_login),
        c.throwaway_hub(db_name=args.db_name, pg_url=args.pg, sqlite=args.sqlite, keep_db=args.keep_db, env=env),
    ):
        user, cluster, grant = c.hub_cluster(env, args.transport)
        from apps.clusters.tasks import cluster_refresh_health

        cluster_refresh_health(cluster.pk)  # steps are checked against the partitions' defaults
        grant.refresh_from_db()
        folders, submitted = [scratch], []
        try:
            make_repo(ssh, f"{scratch}/repo", args.steps, args.sleep)
            c.say(f"(b) native: {args.steps} chained sbatch --dependency=afterok over one SSH connection")
            native_ids = run_native(ssh, args.steps, args.sleep, native_name, scratch)
            native = wait_accounted(ssh, native_ids, timeout)
            c.say(f"(a) axle: a {args.steps}-step pipeline run")
            axle_ids, submit_seconds = run_axle(user, grant, f"{scratch}/repo", axle_name, folders, submitted)
            axle = wait_accounted(ssh, axle_ids, timeout)
        finally:
            if c.count_named(ssh, native_name):
                c.cancel_named(ssh, native_name)
            if submitted:  # the pipeline's jobs are named <pipeline>-<step>: cancelled by id
                ssh.run(["scancel", *submitted], timeout=120)
            ssh.run(["rm", "-rf", "--", *folders], timeout=120)
    ssh.close()
    bad = [r[0] for r in native + axle if r[0] != "COMPLETED"]
    c.say("")
    c.say(f"== pipeline_handoff ({args.transport}, {args.steps} steps of sleep {args.sleep:g} s); {c.load()}")
    c.say(describe("native afterok", gaps(native)))
    c.say(describe("axle pipeline ", gaps(axle)))
    c.say(
        f"axle adds {statistics.mean(gaps(axle)) - statistics.mean(gaps(native)):+.2f} s per hand-off on average "
        f"(goal: <= 1 s); the whole run was on Slurm {submit_seconds:.1f} s after pipeline_run_start began"
    )
    if bad:
        c.say(f"WARNING: not every job completed: {bad}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
