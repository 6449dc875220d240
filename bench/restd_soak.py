#!/usr/bin/env python
"""slurmrestd's memory while the hub polls its queue: N held jobs (default 10,000), the hub's
RestClient.queue() every few seconds for M minutes, slurmrestd's RSS sampled throughout.

    .venv/bin/python bench/restd_soak.py [--jobs 10000] [--minutes 30] [--interval 5]
        [--mode changes|full] [--name-prefix axlebench] [--site /var/lib/axle-soak]

--mode changes (the hub's way): each call asks only for what changed since the last one
(`update_time`; slurmctld answers 304 when nothing did). --mode full: every call asks for
every job, as the hub did before (the client's cache is dropped before each call), and as
slurmctld answers on a busy cluster, where some job changes between any two polls.
--site: the Slurm site (compose/local/stack.sh's AXLE_STACK_DIR) whose slurmrestd is measured:
its cluster.env and run/slurmrestd.pid. The RSS is that process's and all its descendants'
(slurmrestd in inetd mode runs one process per connection under a socket supervisor).
Prints a row per sample (minute, RSS MiB, calls, 304s, full answers, mean call seconds) and
the change of RSS from the first sample to the last. Cancels its jobs (by their unique name,
own jobs only) at the end, also after Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c  # noqa: E402
from bench.track_rate import submit_held  # noqa: E402


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:  # the process ended meanwhile
        pass
    return 0.0


def tree(pid: int) -> list[int]:
    """pid and its descendants (from /proc/PID/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def tree_rss(pid: int) -> tuple[float, int, float]:
    """(RSS of pid and its descendants in MiB, how many processes, the largest one's RSS)."""
    sizes = [rss_mib(p) for p in tree(pid)]
    return sum(sizes), len(sizes), max(sizes, default=0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls (default 5)")
    parser.add_argument("--sample", type=float, default=60.0, help="seconds between RSS samples (default 60)")
    parser.add_argument("--mode", choices=["changes", "full"], default="changes")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--name-prefix", default="axlebench")
    parser.add_argument(
        "--existing",
        metavar="NAME",
        help="use the held jobs named NAME already on the queue (submit none, cancel none): the same "
        "jobs for a before and an after run",
    )
    parser.add_argument(
        "--keep-connection",
        action="store_true",
        help="one kept-alive connection for the whole run, as the client did before it closed its "
        "connection after big answers (RECYCLE_ANSWER_BYTES, RECYCLE_REQUESTS)",
    )
    parser.add_argument("--rest-url", help="another slurmrestd of the site than cluster.env's (with --pidfile)")
    parser.add_argument("--pidfile", help="that slurmrestd's pid file (default: the site's run/slurmrestd.pid)")
    parser.add_argument("--site", default=None, help="the site's AXLE_STACK_DIR (default: the main site's)")
    parser.add_argument(
        "--max-rss-mib",
        type=float,
        default=6144,
        help="stop early when slurmrestd's RSS passes this (default 6144): a growing slurmrestd must "
        "not take the host's memory from everyone else",
    )
    args = parser.parse_args()

    c.interruptible()
    if args.site:
        c.CLUSTER_ENV = Path(args.site) / "cluster.env"
    env = c.cluster_env()
    site = Path(args.site or env.get("AXLE_STACK_DIR", "/var/lib/axle"))
    pidfile = Path(args.pidfile) if args.pidfile else site / "run" / "slurmrestd.pid"
    if args.rest_url:
        env["AXLE_LOCAL_REST_URL"] = args.rest_url
    try:
        pid = int(pidfile.read_text().strip())
        Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError):
        c.die(f"no running slurmrestd named by {pidfile}")
    ssh = c.check_cluster(env)
    name = args.existing or f"{args.name_prefix}-soak-{c.run_id()}"
    cmdline = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()
    how = "one kept-alive connection" if args.keep_connection else "connection closed after big answers"
    c.say(f"restd_soak: {args.jobs} held jobs named {name}, mode {args.mode}, {how}, {args.minutes} min; {c.load()}")
    c.say(f"  site {site}: {env['AXLE_LOCAL_REST_URL']}, slurmrestd pid {pid}: {cmdline}")

    from apps.integrations.slurm import rest as rest_module
    from apps.integrations.slurm.rest import RestClient

    if args.keep_connection:
        rest_module.RECYCLE_ANSWER_BYTES = rest_module.RECYCLE_REQUESTS = float("inf")

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
    minutes = 0.0
    try:
        if args.existing:
            ids = [str(i) for i in range(c.count_named(ssh, name))]
        else:
            ids = submit_held(ssh, args.jobs, name, args.parallel, 1000)
        c.say(f"  {len(ids)} held jobs on the cluster; slurmrestd RSS {tree_rss(pid)[0]:.0f} MiB")
        c.say(
            f"{'min':>6} {'RSS MiB':>8} {'procs':>5} {'max proc':>8} {'calls':>6} {'304':>5} {'full':>5} "
            f"{'mean s':>7} {'jobs seen':>9} {'load 1m':>7}"
        )
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
                rss, procs, biggest = tree_rss(pid)
                samples.append(rss)
                minutes = (now - start) / 60
                mean = sum(durations) / len(durations) if durations else 0.0
                c.say(
                    f"{(now - start) / 60:>6.1f} {rss:>8.0f} {procs:>5} {biggest:>8.0f} {len(codes):>6} "
                    f"{codes.count(304):>5} {codes.count(200):>5} {mean:>7.2f} {seen:>9} {os.getloadavg()[0]:>7.2f}"
                )
                next_sample = now + args.sample
                if rss > args.max_rss_mib:
                    c.say(
                        f"  stopped early: slurmrestd's RSS {rss:.0f} MiB passed --max-rss-mib {args.max_rss_mib:.0f}"
                    )
                    break
            time.sleep(max(0.0, args.interval - (time.monotonic() - t0)))
    finally:
        if not args.existing:
            c.cancel_named(ssh, name)
        ssh.close()
    if samples:
        change = (samples[-1] - samples[0]) / samples[0] * 100 if samples[0] else 0.0
        c.say(
            f"== restd_soak ({args.mode}): slurmrestd RSS {samples[0]:.0f} -> {samples[-1]:.0f} MiB "
            f"({change:+.0f} %), max {max(samples):.0f} MiB over {minutes:.1f} of "
            f"{args.minutes} min, {len(samples)} samples; {len(codes)} calls, "
            f"{codes.count(304)} answered 304; {c.load()}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
