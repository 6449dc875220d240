#!/usr/bin/env python
"""The SSH transport alone: N held jobs through `SSHClient.submit_many` in batches of B, against
N plain `sbatch` over the same kind of connection (one command each), no hub around either.

What it isolates: the batch program's own cost on the login node (issue 14 row 1 over SSH is
the hub's Python and SQL *plus* this), as milliseconds a job of wall time and of the login
node's CPU (every process of the machine: sshd, sh, sbatch, slurmctld, as the 2-core machine
counts them in /proc/stat).

    .venv/bin/python bench/ssh_batch.py [--jobs 500] [--batch 25] [--rounds 3]

Every job is held (never runs), named after the run, and cancelled at the end. Needs the local
cluster (compose/local/stack.sh up); no database.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c  # noqa: E402

SCRIPT = "#!/bin/bash\n#SBATCH --partition=debug\n#SBATCH --time=1\n#SBATCH --ntasks=1\necho hello\n"


def plain(ssh, n: int, name: str) -> tuple[float, float]:
    args = ["sbatch", "--parsable", "--hold", f"--job-name={name}", "--output=/dev/null"]
    busy0, t0 = c.machine_busy_seconds(), time.monotonic()
    for _ in range(n):
        result = ssh.run(args, stdin=SCRIPT.encode())
        if result.exit_status != 0:
            c.die(f"plain sbatch failed: {result.err or result.out!r}", 1)
    return time.monotonic() - t0, c.machine_busy_seconds() - busy0


def batched(ssh, n: int, batch: int, name: str, folder: str) -> tuple[float, float]:
    from apps.integrations.slurm.base import SubmitRequest

    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "MLFLOW_RUN_ID": "", "AXLE_JOB_ID": "0"}
    reqs = [
        SubmitRequest(
            script=SCRIPT,
            job_name=name,
            comment=f"axle:{name}:{i}",
            workdir=f"{folder}/{i % 50}",
            env={**env, "AXLE_JOB_ID": str(i), "MLFLOW_TRACKING_PASSWORD": f"secret-{i}"},
            extra_args=["--hold", "--output=/dev/null"],
        )
        for i in range(n)
    ]
    busy0, t0 = c.machine_busy_seconds(), time.monotonic()
    for start in range(0, n, batch):
        answers = ssh.submit_many(reqs[start : start + batch])
        bad = {m: a for m, a in answers.items() if not isinstance(a, str)}
        if bad:
            c.die(f"submit_many refused {len(bad)} jobs, e.g. {next(iter(bad.values()))}", 1)
    return time.monotonic() - t0, c.machine_busy_seconds() - busy0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=3, help="alternating plain/batched rounds (default 3)")
    args = parser.parse_args()
    c.interruptible()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.test")
    django.setup()
    env = c.cluster_env()
    ssh = c.check_cluster(env)
    rid = c.run_id()
    home = ssh.run(["/bin/sh", "-c", 'printf %s "$HOME"']).out.strip()
    folder = f"{home}/axle-bench-ssh-batch-{rid}"
    rows = []
    try:
        ssh.run(["true"])  # warm
        # The batches' folders exist before the first round, as a hub's job folders' parent does.
        ssh.run(["mkdir", "-p", "--", *(f"{folder}/{k}" for k in range(50))])
        for r in range(args.rounds):
            pname, bname = f"axlebench-sshplain-{rid}-{r}", f"axlebench-sshbatch-{rid}-{r}"
            # Alternating which goes first: the one after runs while slurmctld forgets the
            # other's cancelled jobs.
            if r % 2 == 0:
                p_wall, p_cpu = plain(ssh, args.jobs, pname)
                c.cancel_named(ssh, pname)
            b_wall, b_cpu = batched(ssh, args.jobs, args.batch, bname, folder)
            c.cancel_named(ssh, bname)
            if r % 2 == 1:
                p_wall, p_cpu = plain(ssh, args.jobs, pname)
                c.cancel_named(ssh, pname)
            rows.append((p_wall, p_cpu, b_wall, b_cpu))
            c.say(
                f"round {r + 1}: plain {args.jobs / p_wall:6.1f} jobs/s ({1000 * p_wall / args.jobs:.2f} ms, "
                f"CPU {1000 * p_cpu / args.jobs:.2f} ms a job) | submit_many {args.jobs / b_wall:6.1f} jobs/s "
                f"({1000 * b_wall / args.jobs:.2f} ms, CPU {1000 * b_cpu / args.jobs:.2f} ms a job) | "
                f"batched/plain {p_wall / b_wall:.2f}"
            )
    finally:
        for r in range(args.rounds):
            for name in (f"axlebench-sshplain-{rid}-{r}", f"axlebench-sshbatch-{rid}-{r}"):
                if c.count_named(ssh, name):
                    c.cancel_named(ssh, name)
        ssh.run(["rm", "-rf", "--", folder], timeout=120)
        ssh.close()
    ratio = statistics.median(p / b for p, _, b, _ in rows)
    c.say(f"== ssh_batch: {args.jobs} jobs, batches of {args.batch}, {c.git_head()}; {c.load()}")
    c.say(f"median batched/plain over {len(rows)} rounds: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
