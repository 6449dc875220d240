#!/usr/bin/env python
"""What median stopping saves on the digits example: the same sweep run twice on the local
cluster, with and without Katib's medianstop, and for each the trial-epochs actually run and
the best objective found.

The sweep is examples/digits/sweep.yaml (random search over the learning rate, seeded, so both
runs try the same learning rates), `--trials` trials of `--epochs` epochs, two at a time, one
job array each. Epochs run per trial are the validation-accuracy points its MLflow run got
(an early-stopped trial logs no more once its task is cancelled).

    .venv/bin/python bench/sweep_earlystop.py [--trials 6] [--epochs 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits"


def spec(name: str, code_dir: str, trials: int, epochs: int, early: bool) -> str:
    document = yaml.safe_load((EXAMPLE / "sweep.yaml").read_text())
    document["metadata"]["name"] = name
    s = document["spec"]
    s["maxTrialCount"] = trials
    s["objective"].pop("goal", None)  # run every trial: the comparison is about the stopping rule
    if not early:
        s.pop("earlyStopping")
    script = s["trialTemplate"]["trialSpec"]
    s["trialTemplate"]["trialSpec"] = script.replace('CODE="$HOME/axle/examples/digits"', f'CODE="{code_dir}"').replace(
        "EPOCHS=8", f"EPOCHS={epochs}"
    )
    return yaml.safe_dump(document, sort_keys=False)


def drive(sweep, timeout: float = 900):
    from apps.jobs import services as job_services
    from apps.jobs.models import Job
    from apps.sweeps import advance, services

    deadline = time.monotonic() + timeout
    while not sweep.is_terminal:
        if time.monotonic() > deadline:
            c.die(f"sweep {sweep.name} did not end within {timeout:.0f} s", 1)
        services.sweep_launch(sweep_id=sweep.pk)
        for job in Job.objects.filter(trials__sweep=sweep, status=Job.Status.QUEUED).distinct():
            job_services.job_submit(job_id=job.pk)
        job_services.jobs_poll()
        sweep = advance.sweep_advance(sweep_id=sweep.pk)
        time.sleep(1.5)
    return sweep


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=8)
    c.add_db_args(parser)
    args = parser.parse_args()
    c.interruptible()
    env = c.cluster_env()
    ssh = c.check_cluster(env)
    rid = c.run_id()
    rows = []
    with (
        c.throwaway_mlflow(uri=args.mlflow, env=env),
        c.throwaway_hub(db_name=args.db_name, pg_url=args.pg, sqlite=args.sqlite, keep_db=args.keep_db, env=env),
    ):
        from apps.clusters.transport import slurm_client
        from apps.core import context
        from apps.sweeps import services

        user, cluster, grant = c.hub_cluster(env, "ssh")
        code_dir = f"{grant.job_root}/axlebench-digits-{rid}"
        with slurm_client(grant) as client:
            client.files.write(f"{code_dir}/train.py", (EXAMPLE / "train.py").read_bytes())
        folders = [code_dir]
        names = []
        try:
            for early in (False, True):
                name = f"axlebench-{'median' if early else 'plain'}-{rid}"
                names.append(f"{name}-0")  # its one job array (non-adaptive: one wave)
                c.say(
                    f"sweep {name}: {args.trials} trials x {args.epochs} epochs, medianstop {'on' if early else 'off'}"
                )
                started = time.monotonic()
                with context.bind(actor_id=user.pk):
                    sweep = drive(
                        services.sweep_create(
                            user=user,
                            cluster=cluster,
                            spec_text=spec(name, code_dir, args.trials, args.epochs, early),
                        )
                    )
                folders.append(sweep.folder)
                trials = list(sweep.trials.order_by("number"))
                epochs = sum(len(t.intermediate or {}) for t in trials)
                stopped = [t for t in trials if t.state == "early_stopped"]
                rows.append((early, sweep, trials, epochs, stopped, time.monotonic() - started))
        finally:
            for name in names:
                if c.count_named(ssh, name):
                    c.cancel_named(ssh, name)
            for folder in folders:
                ssh.run(["rm", "-rf", "--", folder], timeout=120)
    ssh.close()
    c.say("")
    c.say(f"== sweep_earlystop (digits, {args.trials} trials x {args.epochs} epochs); {c.load()}")
    for early, sweep, trials, epochs, stopped, took in rows:
        lrs = " ".join(
            f"{t.params['lr']:.2g}:{len(t.intermediate or {})}{'*' if t.state == 'early_stopped' else ''}"
            for t in trials
        )
        c.say(
            f"medianstop {'on ' if early else 'off'}: {sweep.status}, trial-epochs run {epochs:3d} of "
            f"{args.trials * args.epochs}, {len(stopped)} trials stopped, best val_accuracy "
            f"{sweep.best_value:.4f}, wall {took:5.1f}s"
        )
        c.say(f"    lr:epochs per trial (* early stopped): {lrs}")
    if len(rows) == 2:
        saved = 1 - rows[1][3] / max(rows[0][3], 1)
        c.say(
            f"median stopping ran {saved:.0%} fewer trial-epochs; best objective {rows[0][1].best_value:.4f} -> "
            f"{rows[1][1].best_value:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
