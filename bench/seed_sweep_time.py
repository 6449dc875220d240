#!/usr/bin/env python
"""How long `./dev up`'s demo sweep (`manage.py seed_sweep`) takes, on a throwaway hub and a
private MLflow (so neither the demo's database nor its MLflow experiment sees it): `seed_demo`
first (not timed), then `seed_sweep` timed, with what its trials did.

    .venv/bin/python bench/seed_sweep_time.py [--runs 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from io import StringIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="seed_sweep runs, each on a sweep of its own")
    c.add_db_args(parser)
    args = parser.parse_args()
    c.interruptible()
    env = c.cluster_env()
    ssh = c.check_cluster(env)
    rows = []
    with (
        c.throwaway_mlflow(uri=args.mlflow, env=env),
        c.throwaway_hub(db_name=args.db_name, pg_url=args.pg, sqlite=args.sqlite, keep_db=args.keep_db, env=env),
    ):
        from django.core.management import call_command

        from apps.clusters.models import Cluster
        from apps.sweeps.models import Sweep

        c.say("seed_demo (not timed)")
        call_command("seed_demo", stdout=StringIO())
        # The trials report to the hub's (private) MLflow, not to the demo's, which seed_demo's
        # cluster names: nothing of this run lands in the demo's experiment.
        Cluster.objects.update(mlflow_tracking_uri="")
        folders = []
        try:
            for run in range(args.runs):
                Sweep.objects.filter(name="digits-lr-demo").update(name=f"digits-lr-demo-before-{run}")
                out = StringIO()
                started = time.monotonic()
                call_command("seed_sweep", stdout=out)
                took = time.monotonic() - started
                sweep = Sweep.objects.get(name="digits-lr-demo")
                folders.append(sweep.folder)
                trials = " ".join(
                    f"#{t.number}:{t.state}:{len(t.intermediate or {})}ep" for t in sweep.trials.order_by("number")
                )
                c.say(f"  run {run + 1}: {took:.1f} s, {sweep.status}, best {sweep.best_value}; {trials}")
                rows.append(took)
        finally:
            for folder in folders:
                ssh.run(["rm", "-rf", "--", folder], timeout=120)
    ssh.close()
    c.say(f"== seed_sweep: {' '.join(f'{t:.1f}s' for t in rows)}; {c.load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
