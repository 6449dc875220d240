#!/usr/bin/env python
"""Where slurmrestd's memory grows: N requests to one slurmrestd, its RSS (the process and its
descendants, for inetd mode) after each. A few minutes, for finding the cause; the 30-minute
figure is bench/restd_soak.py's.

    .venv/bin/python bench/restd_probe.py --site /var/lib/axle-soak --url http://127.0.0.1:6931 \
        --pid PID [--path jobs|diag|ping] [--requests 10] [--new-connection]

--pid: the slurmrestd (or its socket supervisor) to measure. --new-connection: a new TCP
connection per request instead of one kept alive. Uses the jobs already on the site's queue
(restd_soak.py or track_rate.py puts them there); it submits nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.integrations.slurm.rest import mint_token  # noqa: E402
from bench import _common as c  # noqa: E402
from bench.restd_soak import tree_rss  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", default="/var/lib/axle")
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--path", choices=["jobs", "diag", "ping"], default="jobs")
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--new-connection", action="store_true")
    args = parser.parse_args()
    key = (Path(args.site) / "slurm" / "jwt_hs256.key").read_bytes()
    headers = {"X-SLURM-USER-NAME": c.BENCH_USER, "X-SLURM-USER-TOKEN": mint_token(key, c.BENCH_USER)}
    url = f"{args.url.rstrip('/')}/slurm/v0.0.38/{args.path}"
    session = requests.Session()
    rss0, procs, _ = tree_rss(args.pid)
    how = "a new connection each" if args.new_connection else "one connection"
    c.say(f"restd_probe: {args.requests} x GET {url}, {how}")
    c.say(f"  before: RSS {rss0:.0f} MiB ({procs} processes); {c.load()}")
    peak = rss0
    for i in range(1, args.requests + 1):
        t0 = time.monotonic()
        response = session.get(url, headers=headers, timeout=300)
        size = len(response.content)
        took = time.monotonic() - t0
        # the serving process is alive until the connection closes: its peak is seen here
        rss, procs, biggest = tree_rss(args.pid)
        peak = max(peak, rss)
        if args.new_connection:
            session.close()
            time.sleep(0.5)
        after, procs_after, _ = tree_rss(args.pid)
        c.say(
            f"  {i:>3}: HTTP {response.status_code}, {size / 1e6:6.1f} MB in {took:5.2f} s; RSS {rss:7.0f} MiB "
            f"({procs} procs, largest {biggest:.0f}); after close {after:7.0f} MiB ({procs_after} procs)"
        )
    session.close()
    # a per-connection slurmrestd takes a moment to notice the close and exit
    deadline = time.monotonic() + 30
    time.sleep(1)
    while tree_rss(args.pid)[1] > 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    end, procs, _ = tree_rss(args.pid)
    c.say(
        f"== restd_probe: RSS {rss0:.0f} -> {end:.0f} MiB (peak {peak:.0f}) after {args.requests} requests; {c.load()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
