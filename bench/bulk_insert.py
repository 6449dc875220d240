#!/usr/bin/env python
"""Writing a sweep's trials: 100 rows (default) into `sweeps_trial`, three ways, on a
throwaway PostgreSQL database migrated as the hub's.

    copy        `bulk_insert` as the hub runs it: one `COPY … FROM STDIN`
    jsonb       one JSON document unpacked by `jsonb_to_recordset` (`bulk_insert` before)
    values      Django's `bulk_create`: a `VALUES` list, a parameter per value

Each way writes N rows of a grid sweep's shape (params, values, system_attrs as Optuna's grid
gives them, the wave's job and task) in a transaction that is rolled back, R times (default
15), alternating the ways; prints each way's median and range, in rounds (default 3).

    .venv/bin/python bench/bulk_insert.py [--rows 100] [--repeat 15] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    c.add_db_args(parser)
    args = parser.parse_args()
    if args.sqlite:
        c.die("COPY is PostgreSQL's: run it on PostgreSQL", 2)
    env = c.cluster_env()
    with c.throwaway_hub(db_name=args.db_name, pg_url=args.pg, sqlite=False, keep_db=args.keep_db, env=env):
        from django.db import connection, transaction

        from apps.core.bulk import bulk_insert
        from apps.jobs.models import Job
        from apps.sweeps.models import Trial
        from tests.factories import SweepFactory

        sweep = SweepFactory(name="bench", max_trial_count=args.rows, folder="/bench")
        job = Job.objects.create(
            owner=sweep.owner, cluster=sweep.cluster, grant=sweep.grant, name="bench-0", script="#!/bin/sh\n"
        )

        def rows() -> list[dict]:
            space = {"lr": [0.001, 0.01, 0.1, 1.0], "layers": list(range(1, 26))}
            return [
                {
                    "sweep_id": sweep.pk,
                    "number": i,
                    "params": {"lr": space["lr"][i % 4], "layers": space["layers"][i // 4 % 25]},
                    "values": {"lr": str(space["lr"][i % 4]), "layers": str(space["layers"][i // 4 % 25])},
                    "system_attrs": {"grid_id": i, "search_space": space},
                    "task_id": i,
                    "job_id": job.pk,
                    "state": Trial.State.PENDING,
                }
                for i in range(args.rows)
            ]

        quote = connection.ops.quote_name
        fields = [f for f in Trial._meta.concrete_fields if not f.primary_key]
        record = ", ".join(f"{quote(f.column)} {f.db_type(connection)}" for f in fields)
        names = ", ".join(quote(f.column) for f in fields)
        jsonb_sql = (
            f"INSERT INTO {quote(Trial._meta.db_table)} ({names}) SELECT {names} "
            f"FROM jsonb_to_recordset(%s::jsonb) AS r({record})"
        )

        def jsonb(made: list[dict]) -> None:
            from django.utils import timezone

            now = timezone.now().isoformat()
            base = {f.column: None for f in fields}
            base.update(intermediate={}, metrics={}, stop_reason={}, mlflow_run_id="", updated_at=now, state="created")
            document = json.dumps([{**base, **row} for row in made])
            with connection.cursor() as cursor:
                cursor.execute(jsonb_sql, [document])

        ways = {
            "copy": lambda made: bulk_insert(Trial, made),
            "jsonb": jsonb,
            "values": lambda made: Trial.objects.bulk_create([Trial(**row) for row in made]),
        }
        for r in range(args.rounds):
            took: dict[str, list[float]] = {w: [] for w in ways}
            for _ in range(args.repeat):
                for way, write in ways.items():
                    made = rows()
                    try:
                        with transaction.atomic():
                            started = time.perf_counter()
                            write(made)
                            took[way].append((time.perf_counter() - started) * 1000)
                            if Trial.objects.filter(sweep=sweep).count() != args.rows:
                                c.die(f"{way} did not write {args.rows} rows", 1)
                            raise _Undo
                    except _Undo:
                        pass
            c.say(
                f"round {r + 1}: "
                + " | ".join(f"{w} {statistics.median(t):6.2f} ms ({min(t):.2f}-{max(t):.2f})" for w, t in took.items())
            )
    c.say(f"== bulk_insert: {args.rows} trial rows, median of {args.repeat} per way; {c.load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
