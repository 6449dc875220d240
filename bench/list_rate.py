#!/usr/bin/env python
"""Job lists at scale: N jobs (default 100,000) of one user in a throwaway database, then
each list the pages and the API offer, timed in-process (Django's test client: the view,
its queries and its template or serializer, no HTTP server), `--repeat` times each.

    .venv/bin/python bench/list_rate.py [--jobs 100000] [--repeat 40]

Prints for each request p50/p95 ms, queries and bytes. The jobs are rows only (no cluster
is touched): a mix of statuses (1 % active), 3 clusters, parameters and accounting like
real ones. The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as c  # noqa: E402

SCRIPT = "#!/bin/bash\n#SBATCH --partition=debug\n#SBATCH --time=10\n" + "python train.py --epochs 10\n" * 20


def make_rows(n: int):
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from apps.clusters.models import Cluster, ClusterGrant
    from apps.jobs.models import Job

    user = get_user_model().objects.create_user(username="lister", password="x")
    other = get_user_model().objects.create_user(username="someone-else", password="x")
    clusters = [Cluster.objects.create(name=f"hpc{i}", transport="ssh") for i in range(3)]
    grants = {
        (u.pk, cl.pk): ClusterGrant.objects.create(user=u, cluster=cl, cluster_username=u.username, status="active")
        for u in (user, other)
        for cl in clusters
    }
    statuses = ["completed"] * 70 + ["failed"] * 19 + ["cancelled"] * 10 + ["running"]
    now = timezone.now()
    batch = []
    for i in range(n):
        owner = user if i % 10 else other  # 90 % the lister's, 10 % someone else's
        cluster = clusters[i % 3]
        batch.append(
            Job(
                owner=owner,
                grant=grants[(owner.pk, cluster.pk)],
                cluster=cluster,
                name=f"train-{i}",
                status=statuses[i % 100],
                script=SCRIPT,
                script_sha256=hashlib.sha256(SCRIPT.encode()).hexdigest(),
                cluster_username=owner.username,
                marker=f"axle-bench-{uuid.uuid4().hex}",
                workdir=f"/scratch/{owner.username}/axle-jobs/{i}",
                parameters={"LR": "0.01", "EPOCHS": "10", "BATCH": "64"},
                effective_request={"partition": "debug", "cpus": 4, "mem_mb": 8000, "time_minutes": 60},
                accounting={"node_list": "node01", "elapsed_seconds": 300, "max_rss_bytes": 123456789},
                metrics={"accuracy": 0.9, "loss": 0.1},
                slurm_job_id=str(100000 + i),
                created_at=now - timedelta(seconds=n - i),
            )
        )
        if len(batch) == 5000:
            Job.objects.bulk_create(batch)
            batch = []
    if batch:
        Job.objects.bulk_create(batch)
    return user


def _plain_static_files() -> None:
    """Pages link their CSS through the manifest `collectstatic` writes; the throwaway hub has
    none, so it names the files as they are (what is measured is the view, not the CSS)."""
    from django.conf import settings
    from django.contrib.staticfiles import storage as static_storage
    from django.core.files.storage import storages
    from django.utils.functional import empty

    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    storages._storages = {}
    storages.__dict__.pop("backends", None)  # a cached_property
    static_storage.staticfiles_storage._wrapped = empty


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=40)
    c.add_db_args(parser)
    args = parser.parse_args()
    c.interruptible()
    env = c.cluster_env()
    c.say(f"list_rate: {args.jobs} jobs, {args.repeat} requests each; {c.load()}")
    with c.throwaway_hub(db_name=args.db_name, pg_url=args.pg, sqlite=args.sqlite, keep_db=args.keep_db, env=env):
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext

        from apps.jobs.models import Job

        _plain_static_files()
        t0 = time.monotonic()
        user = make_rows(args.jobs)
        # As a real database looks once autovacuum has visited it: statistics for the planner,
        # and a visibility map that lets the ids-first reads be index-only scans.
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE jobs_job")
            c.say("  VACUUM ANALYZE jobs_job done (what autovacuum does to a real database)")
        c.say(f"  {args.jobs} rows in {time.monotonic() - t0:.0f}s; hub {c.describe_hub()}")
        client = Client(HTTP_HOST="localhost")
        client.force_login(user)
        mine = Job.objects.filter(owner=user).count()
        deep = Job.objects.filter(owner=user).order_by("-created_at", "-id")[90000 if mine > 90000 else mine - 50]
        from apps.core import pagination

        cursor_token = (
            pagination.KeysetPagination._encode(deep.created_at, deep.pk)
            if hasattr(pagination, "KeysetPagination")
            else None
        )
        deep_page = max(1, min(2000, mine // 25))
        deep_offset = 90000 if mine > 90050 else max(0, mine - 50)
        requests = [
            ("home", "/", {}),
            ("jobs list", "/jobs/", {}),
            ("jobs ?status=running", "/jobs/?status=running", {}),
            ("jobs ?status=active (polled)", "/jobs/?status=active", {"HTTP_HX_REQUEST": "true"}),
            ("jobs ?cluster=hpc1", "/jobs/?cluster=hpc1", {}),
            (f"jobs ?page={deep_page}", f"/jobs/?page={deep_page}", {}),
            ("api list (limit 46)", "/api/v1/jobs/?limit=46", {}),
            (f"api ?offset={deep_offset}", f"/api/v1/jobs/?offset={deep_offset}&limit=50", {}),
            ("api ?status=running", "/api/v1/jobs/?status=running", {}),
        ]
        if cursor_token:
            requests.append(("api ?cursor= (at 90000)", f"/api/v1/jobs/?cursor={cursor_token}&limit=50", {}))
        # The list's live poll as the page makes it: `?live=<version>` from the page's poller
        # (a tree from before the live lists has none: then the plain htmx request, as it polled).
        page = client.get("/jobs/?status=active").content.decode()
        held = re.search(r'data-live-version="([0-9a-f]+)"', page)
        if held:
            requests[3] = (
                "jobs ?status=active (polled)",
                f"/jobs/?status=active&live={held.group(1)}",
                {"HTTP_HX_REQUEST": "true"},
            )
        # One request of each first, not timed: a long-running server has its templates compiled
        # and its URL patterns loaded; a cold first request would be most of a p95 of 20.
        for _, url, headers in requests:
            client.get(url, **headers)
        c.say(f"{'request':<34} {'p50 ms':>8} {'p95 ms':>8} {'queries':>8} {'bytes':>9} {'status':>6}")
        for label, url, headers in requests:
            times, size, queries, status = [], 0, 0, 0
            etag = None
            for _ in range(args.repeat):
                extra = dict(headers)
                if etag and headers.get("HTTP_HX_REQUEST"):
                    extra["HTTP_IF_NONE_MATCH"] = etag  # as the browser revalidates a polled part
                with CaptureQueriesContext(connection) as ctx:
                    t = time.monotonic()
                    response = client.get(url, **extra)
                    times.append(time.monotonic() - t)
                etag = response.headers.get("ETag") or etag
                size, queries, status = len(response.content), len(ctx.captured_queries), response.status_code
            c.say(
                f"{label:<34} {c.percentile(times, 50) * 1000:>8.1f} {c.percentile(times, 95) * 1000:>8.1f} "
                f"{queries:>8} {size:>9} {status:>6}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
