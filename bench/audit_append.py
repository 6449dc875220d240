#!/usr/bin/env python
"""Appending events to the audit chain: `audit_record_many` of N events (default 3, what a
sweep's POST appends) on a throwaway PostgreSQL database migrated as the hub's, two ways:

    copy        as the hub runs it: the head locked, the events written with one `COPY`
                (`bulk_insert`), the head moved
    insert      the same with the events written by Django's `bulk_create` (before 63c53ec,
                which gave it the event objects themselves: here they are made again from
                the same rows, a few microseconds more)

The chain gets one committed event first (as a hub's has: the first keyed event also signs the
legacy boundary, which no later append does). Then each append runs in a transaction that is
rolled back, R times (default 50), alternating the ways; prints each way's median and range,
in rounds (default 3). At the end one append of each way is committed and the chain verified.
Needs PostgreSQL only (no cluster).

    .venv/bin/python bench/audit_append.py [--events 3] [--repeat 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c  # noqa: E402


class _Undo(Exception):
    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    c.add_db_args(parser)
    args = parser.parse_args()
    if args.sqlite:
        c.die("COPY is PostgreSQL's: run it on PostgreSQL", 2)
    with c.throwaway_hub(db_name=args.db_name, pg_url=args.pg, sqlite=False, keep_db=args.keep_db, env={}):
        from django.db import transaction

        from apps.audit import services
        from apps.audit.models import AuditEvent
        from apps.audit.selectors import audit_verify
        from tests.factories import SweepFactory

        sweep = SweepFactory(name="bench", max_trial_count=100, folder="/bench")
        user = sweep.owner
        copy = services.bulk_insert

        def insert(model, rows):
            model.objects.bulk_create([model(**row) for row in rows])

        def entries() -> list[dict]:
            return [
                {
                    "action": "sweep.created",
                    "subject": sweep,
                    "actor": user,
                    "after": {"cluster": "local", "algorithm": "grid", "trials": 100, "first_array": i},
                }
                for i in range(args.events)
            ]

        with transaction.atomic():
            services.audit_record(action="bench.started", actor=user)
        ways = {"copy": copy, "insert": insert}
        for r in range(args.rounds):
            took: dict[str, list[float]] = {w: [] for w in ways}
            for _ in range(args.repeat):
                for way, write in ways.items():
                    services.bulk_insert = write
                    try:
                        with transaction.atomic():
                            started = time.perf_counter()
                            services.audit_record_many(entries())
                            took[way].append((time.perf_counter() - started) * 1000)
                            raise _Undo
                    except _Undo:
                        pass
            c.say(
                f"round {r + 1}: "
                + " | ".join(f"{w} {statistics.median(t):6.2f} ms ({min(t):.2f}-{max(t):.2f})" for w, t in took.items())
            )
        for write in ways.values():
            services.bulk_insert = write
            with transaction.atomic():
                services.audit_record_many(entries())
        services.bulk_insert = copy
        if AuditEvent.objects.count() != 1 + 2 * args.events or not audit_verify().ok:
            c.die("the chain does not verify after the appends", 1)
    c.say(f"== audit_append: {args.events} events per append, median of {args.repeat} per way; {c.load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
