#!/usr/bin/env python
"""slurmrestd's memory while the hub polls its queue: N held jobs (default 10,000), the hub's
RestClient.queue() every few seconds for M minutes, slurmrestd's RSS sampled throughout.

    .venv/bin/python bench/restd_soak.py [--jobs 10000] [--minutes 30] [--interval 5]
        [--mode changes|full] [--name-prefix axlebench]

--mode changes (the hub's way): each call asks only for what changed since the last one
(`update_time`; slurmctld answers 304 when nothing did). --mode full: every call asks for
every job, as the hub did before (the client's cache is dropped before each call).
Prints a row per sample (minute, RSS MiB, calls, 304s, full answers, mean call seconds) and
the change of RSS from the first sample to the last. Cancels its jobs (by their unique name,
own jobs only) at the end, also after Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c  # noqa: E402
from bench.track_rate import submit_held  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls (default 5)")
    parser.add_argument("--sample", type=float, default=60.0, help="seconds between RSS samples (default 60)")
    parser.add_argument("--mode", choices=["changes", "full"], default="changes")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--name-prefix", default="axlebench")
    args = parser.parse_args()

    c.interruptible()
    env = c.cluster_env()
    ssh = c.check_cluster(env)
    [pid] = c.pids_named("slurmrestd")[:1] or [None]
    if pid is None:
        c.die("slurmrestd is not running on this machine")
    name = f"{args.name_prefix}-soak-{c.run_id()}"
    c.say(f"restd_soak: {args.jobs} held jobs named {name}, mode {args.mode}, {args.minutes} min; {c.load()}")

    from apps.integrations.slurm.rest import RestClient

    key = Path(env["AXLE_LOCAL_JWT_KEY_FILE"]).read_bytes()
    rest = RestClient(
        env["AXLE_LOCAL_REST_URL"],
        c.BENCH_USER,
        jwt_key=key,
        api_version=env.get("AXLE_LOCAL_REST_API_VERSION", "v0.0.38"),
        timeout=120,
    )
    codes: list[int] = []
    real = rest._session.request

    def request(method, url, **kwargs):
        response = real(method, url, **kwargs)
        codes.append(response.status_code)
        return response

    rest._session.request = request
    samples = []
    try:
        ids = submit_held(ssh, args.jobs, name, args.parallel, 1000)
        c.say(f"  {len(ids)} held jobs on the cluster; slurmrestd pid {pid}, RSS {rss_mib(pid):.0f} MiB")
        c.say(f"{'min':>6} {'RSS MiB':>8} {'calls':>6} {'304':>5} {'full':>5} {'mean s':>7} {'jobs seen':>9}")
        start = time.monotonic()
        next_sample = start
        durations: list[float] = []
        seen = 0
        while time.monotonic() - start < args.minutes * 60:
            if args.mode == "full":
                rest._queue_cache = None
            t0 = time.monotonic()
            try:
                seen = len(rest.queue(c.BENCH_USER))
            except Exception as exc:  # noqa: BLE001 - a failed poll is counted, the soak goes on
                c.say(f"  poll failed: {exc}")
            durations.append(time.monotonic() - t0)
            now = time.monotonic()
            if now >= next_sample:
                rss = rss_mib(pid)
                samples.append(rss)
                mean = sum(durations) / len(durations) if durations else 0.0
                c.say(
                    f"{(now - start) / 60:>6.1f} {rss:>8.0f} {len(codes):>6} {codes.count(304):>5} "
                    f"{codes.count(200):>5} {mean:>7.2f} {seen:>9}"
                )
                next_sample = now + args.sample
            time.sleep(max(0.0, args.interval - (time.monotonic() - t0)))
    finally:
        c.cancel_named(ssh, name)
        ssh.close()
    if samples:
        change = (samples[-1] - samples[0]) / samples[0] * 100 if samples[0] else 0.0
        c.say(
            f"== restd_soak ({args.mode}): slurmrestd RSS {samples[0]:.0f} -> {samples[-1]:.0f} MiB "
            f"({change:+.0f} %), max {max(samples):.0f} MiB over {args.minutes} min; {len(codes)} calls, "
            f"{codes.count(304)} answered 304; {c.load()}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
