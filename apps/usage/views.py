"""The usage page (per team, user, cluster or Slurm account and month, with a plot and the
grants' monthly budgets) and its CSV export."""

from __future__ import annotations

import csv
import re
from datetime import datetime

from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from . import selectors
from .selectors import GROUPS, METRICS

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
DEFAULT_MONTHS = 6


def _month(value: str) -> datetime | None:
    m = _MONTH.match(value or "")
    if not m or not 1 <= int(m.group(2)) <= 12:
        return None
    return timezone.make_aware(datetime(int(m.group(1)), int(m.group(2)), 1))


def _filters(request) -> dict:
    params = request.GET
    errors = []
    this_month = selectors.month_start(timezone.localdate())
    first = _month(params.get("from", ""))
    last = _month(params.get("to", ""))
    if params.get("from") and first is None:
        errors.append("“From” is not a month (use YYYY-MM).")
    if params.get("to") and last is None:
        errors.append("“To” is not a month (use YYYY-MM).")
    last = last or this_month
    first = first or selectors.add_months(last, 1 - DEFAULT_MONTHS)
    if first > last:
        errors.append("“From” comes after “To”: showing the months up to “To”.")
        first = selectors.add_months(last, 1 - DEFAULT_MONTHS)
    group = params.get("group", "team")
    if group not in GROUPS:
        errors.append(f"Unknown grouping {group!r}: grouping by team.")
        group = "team"
    metric = params.get("metric", "cpu_hours")
    if metric not in METRICS:
        errors.append(f"Unknown measure {metric!r}: showing CPU-hours.")
        metric = "cpu_hours"
    return {
        "first": first,
        "last": last,
        "start": first,
        "end": selectors.add_months(last, 1),
        "group": group,
        "metric": metric,
        "cluster": params.get("cluster", "").strip(),
        "errors": errors,
    }


def usage(request):
    f = _filters(request)
    rows = selectors.usage_summary(
        user=request.user, group=f["group"], start=f["start"], end=f["end"], cluster=f["cluster"]
    )
    months = []
    moment = f["first"]
    while moment <= f["last"]:
        months.append(moment.date())
        moment = selectors.add_months(moment, 1)
    groups = sorted({r.group for r in rows})
    by_key = {(r.group, r.month): getattr(r, f["metric"]) for r in rows}
    chart = {
        "label": METRICS[f["metric"]][1],
        "months": [m.strftime("%Y-%m") for m in months],
        "series": [{"name": g, "values": [round(by_key.get((g, m), 0), 4) for m in months]} for g in groups],
    }
    totals = {name: sum(getattr(r, name) for r in rows) for name in METRICS} | {"jobs": sum(r.jobs for r in rows)}
    context = {
        "f": f,
        "rows": rows,
        "chart": chart,
        "totals": totals,
        "groups": GROUPS,
        "metrics": METRICS,
        "budgets": selectors.usage_against_budgets(user=request.user, month=f["last"]),
        "collections": selectors.usage_collections() if selectors.sees_all_usage(request.user) else None,
        "sees_all": selectors.sees_all_usage(request.user),
        "query": request.GET.urlencode(),
    }
    return render(request, "usage/usage.html", context)


class _Echo:
    def write(self, value):
        return value


RECORD_FIELDS = [
    "cluster",
    "slurm_job_id",
    "array_job_id",
    "hub_job",
    "user",
    "team",
    "cluster_username",
    "account",
    "partition",
    "state",
    "name",
    "started_at",
    "ended_at",
    "elapsed_seconds",
    "cpus",
    "gpus",
    "mem_mb",
    "cpu_hours",
    "gpu_hours",
    "mem_gb_hours",
]


def _record_row(r) -> list:
    return [
        r.cluster.name,
        r.slurm_job_id,
        r.array_job_id,
        str(r.job.uuid) if r.job else "",
        r.user.username if r.user else "",
        r.team.name if r.team else "",
        r.cluster_username,
        r.account,
        r.partition,
        r.state,
        r.name,
        r.started_at.isoformat() if r.started_at else "",
        r.ended_at.isoformat(),
        r.elapsed_seconds,
        r.cpus,
        r.gpus,
        r.mem_mb,
        f"{r.cpu_seconds / 3600:.6f}",
        f"{r.gpu_seconds / 3600:.6f}",
        f"{r.mem_mb_seconds / 3600 / 1024:.6f}",
    ]


def usage_export(request):
    """CSV of what the page shows: the summary, or (`?rows=jobs`) one line per job."""
    f = _filters(request)
    writer = csv.writer(_Echo())
    if request.GET.get("rows") == "jobs":
        records = selectors.usage_records(user=request.user, start=f["start"], end=f["end"], cluster=f["cluster"])
        lines = (writer.writerow(_record_row(r)) for r in records.iterator(chunk_size=2000))
        header = RECORD_FIELDS
        name = "usage-jobs"
    else:
        rows = selectors.usage_summary(
            user=request.user, group=f["group"], start=f["start"], end=f["end"], cluster=f["cluster"]
        )
        header = [f["group"], "month", "jobs", *METRICS]
        lines = (
            writer.writerow([r.group, r.month.strftime("%Y-%m"), r.jobs, *(f"{getattr(r, m):.6f}" for m in METRICS)])
            for r in rows
        )
        name = f"usage-by-{f['group']}"

    def stream():
        yield writer.writerow(header)
        yield from lines

    response = StreamingHttpResponse(stream(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}-{f["first"]:%Y-%m}-{f["last"]:%Y-%m}.csv"'
    return response
