#!/usr/bin/env python
"""What MLflow's login costs the hub: a private MLflow started as compose/local/stack.sh
starts the demo's (basic-auth app, its mlflow_auth.ini, one worker), once with the
credential cache the stack turns on and once without it (`--logins`), and for each:

- one signed-in request (`experiments/search`) and one run creation, one at a time:
  median and p95 latency;
- run creations from 8 threads (each its own kept-alive session, as the hub's submission
  opens runs): per second;
- making a user (`users/create`: the server hashes its password) and granting it an
  experiment, as a job's login costs, one at a time: median.

    .venv/bin/python bench/mlflow_login.py [--requests 40] [--runs 300] [--users 10]
        [--logins stack-nocache stack]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c  # noqa: E402


def timed(call, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        call()
        times.append(time.monotonic() - t0)
    return times


def show(label: str, times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return f"{label}: median {statistics.median(ms):.1f} ms, p95 {c.percentile(ms, 95):.1f} ms ({len(ms)})"


def measure(uri: str, auth: tuple[str, str], args) -> list[str]:
    from apps.integrations.mlflow import auth as mlflow_auth
    from apps.integrations.mlflow.client import TrackingClient

    hub = TrackingClient(uri, auth=auth)
    experiment = hub.ensure_experiment(f"bench-login-{c.run_id()}")
    hub.get_run(hub.create_run(experiment, "warm-up"))
    lines = [
        show(
            "signed-in search", timed(lambda: hub._get("experiments/search", "searching", max_results=1), args.requests)
        ),
        show("create_run, one at a time", timed(lambda: hub.create_run(experiment, "one"), args.requests)),
    ]
    left, lock = [args.runs], threading.Lock()

    def creator() -> None:
        own = TrackingClient(uri, auth=auth)
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            own.create_run(experiment, "many")

    threads = [threading.Thread(target=creator) for _ in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    lines.append(f"create_run from 8 threads: {args.runs / wall:.1f} per second ({args.runs} in {wall:.2f} s)")
    names = [f"axle-bench-user-{c.run_id()}-{i}" for i in range(args.users)]
    users = timed(lambda: mlflow_auth.user_with_experiment(hub, names.pop(), experiment), args.users)
    lines.append(show("a job's login (user + grant)", users))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40, help="requests timed one at a time (default 40)")
    parser.add_argument("--runs", type=int, default=300, help="run creations from 8 threads (default 300)")
    parser.add_argument("--users", type=int, default=10, help="logins made one at a time (default 10)")
    parser.add_argument("--logins", nargs="+", default=["stack-nocache", "stack"], choices=["stack-nocache", "stack"])
    args = parser.parse_args()
    c.interruptible()
    env = c.cluster_env()
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.local")
    results = {}
    for login in args.logins:
        c.say(f"== {login}: {c.load()}")
        with c.throwaway_mlflow(uri="throwaway", env=dict(env), login=login) as uri:
            auth = (os.environ["AXLE_MLFLOW_USERNAME"], os.environ["AXLE_MLFLOW_PASSWORD"])
            results[login] = measure(uri, auth, args)
        for line in results[login]:
            c.say(f"  {line}")
    c.say(f"\n== mlflow_login, {c.load()}")
    for login, lines in results.items():
        c.say(f"{login}:")
        for line in lines:
            c.say(f"  {line}")


if __name__ == "__main__":
    main()
