"""Reading Slurm's accounting into usage rows.

One call per cluster and window: with the cluster's operator grant, one sacct (or one
slurmdbd request over REST) for every granted user at once; without one, each account can
read only its own jobs, so one call per cluster account, run as that account. Nothing is
asked of Slurm inside a database transaction; the rows of a window are written in one."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from apps.accounts.teams import team_default
from apps.clusters.models import Cluster, ClusterGrant
from apps.clusters.transport import slurm_client
from apps.integrations.slurm.base import JobInfo, SlurmError, UsageWindow
from apps.integrations.slurm.states import hub_state
from apps.jobs.models import Job, JobTask

from .models import UsageCollection, UsageRecord

log = logging.getLogger(__name__)

# Accounting is read again this far back each time: a job that ends while a read is under
# way, or that slurmdbd records late, is still found by the next read.
OVERLAP = timedelta(hours=1)
# The first read of a cluster goes this far back.
FIRST_WINDOW = timedelta(days=31)

_UPDATED = [
    "array_job_id",
    "job",
    "user",
    "team",
    "cluster_username",
    "account",
    "partition",
    "state",
    "name",
    "submitted_at",
    "started_at",
    "ended_at",
    "elapsed_seconds",
    "cpus",
    "gpus",
    "mem_mb",
    "cpu_seconds",
    "gpu_seconds",
    "mem_mb_seconds",
]


@dataclass
class Collected:
    cluster: str
    calls: int = 0
    rows: int = 0
    errors: list[str] = field(default_factory=list)


def _finished(info: JobInfo) -> bool:
    state = hub_state(info.state)
    return info.end_time is not None and state is not None and state not in ("pending", "running")


def _plan(cluster: Cluster, since: datetime, now: datetime) -> list[tuple[ClusterGrant, UsageWindow]]:
    """Which account reads which window: the operator's one call, or one per cluster account."""
    grants = [g for g in cluster.grants.select_related("cluster", "user") if g.cluster_username]
    usernames = tuple(sorted({g.cluster_username for g in grants}))
    start = max(int((now - since).total_seconds()), 1)
    operator = cluster.operator_grant
    if operator is not None and operator.is_usable and operator.cluster_id == cluster.pk:
        accounts: tuple[str, ...] = ()
        if cluster.usage_all_jobs:
            accounts = tuple(sorted({a for g in grants for a in g.allowed_accounts}))
        if not usernames and not accounts:
            return []
        users = () if accounts else usernames
        return [(operator, UsageWindow(start_seconds_ago=start, users=users, accounts=accounts))]
    plan = []
    for username in usernames:
        usable = [g for g in grants if g.cluster_username == username and g.is_usable]
        if usable:
            plan.append((usable[0], UsageWindow(start_seconds_ago=start)))
    return plan


def _records(cluster: Cluster, rows: list[JobInfo]) -> list[UsageRecord]:
    """Usage rows, each tied to the hub's job (if the hub submitted it), its user and team."""
    ids = {r.job_id for r in rows} | {r.array_job_id for r in rows if r.array_job_id}
    jobs = {
        j.slurm_job_id: j for j in Job.objects.filter(cluster=cluster, slurm_job_id__in=ids).select_related("owner")
    }
    for task in JobTask.objects.filter(job__cluster=cluster, slurm_job_id__in=ids).select_related("job__owner"):
        jobs.setdefault(task.slurm_job_id, task.job)
    grant_users = {
        g.cluster_username: g.user
        for g in ClusterGrant.objects.filter(cluster=cluster).select_related("user").order_by("created_at")
    }
    teams: dict[int, object] = {}
    records = []
    for info in rows:
        job = jobs.get(info.job_id) or (jobs.get(info.array_job_id) if info.array_job_id else None)
        if job is None and not cluster.usage_all_jobs:
            continue
        user = job.owner if job is not None else grant_users.get(info.user)
        if job is not None and job.team_id:
            team = job.team
        elif user is not None:
            if user.pk not in teams:
                teams[user.pk] = team_default(user)
            team = teams[user.pk]
        else:
            team = None
        elapsed = max(info.elapsed_seconds or 0, 0)
        cpus, gpus, mem = info.alloc_cpus or 0, info.alloc_gpus or 0, info.alloc_mem_mb or 0
        records.append(
            UsageRecord(
                cluster=cluster,
                slurm_job_id=info.job_id,
                array_job_id=info.array_job_id or "",
                job=job,
                user=user,
                team=team,
                cluster_username=info.user,
                account=info.account,
                partition=info.partition,
                state=info.state,
                name=info.name[:200],
                submitted_at=info.submit_time,
                started_at=info.start_time,
                ended_at=info.end_time,
                elapsed_seconds=elapsed,
                cpus=cpus,
                gpus=gpus,
                mem_mb=mem,
                cpu_seconds=cpus * elapsed,
                gpu_seconds=gpus * elapsed,
                mem_mb_seconds=mem * elapsed,
            )
        )
    return records


def usage_collect(*, cluster: Cluster, now: datetime | None = None) -> Collected:
    """Read the finished jobs of `cluster` since the last read (less OVERLAP) and upsert them."""
    now = now or timezone.now()
    state, _ = UsageCollection.objects.get_or_create(cluster=cluster)
    since = (state.collected_until - OVERLAP) if state.collected_until else now - FIRST_WINDOW
    result = Collected(cluster=cluster.name)
    found: dict[str, JobInfo] = {}
    for grant, window in _plan(cluster, since, now):
        result.calls += 1
        try:
            with slurm_client(grant) as client:
                for info in client.usage(window):
                    if _finished(info):
                        found[info.job_id] = info
        except SlurmError as exc:
            result.errors.append(f"{grant.cluster_username}: {exc}")
    records = _records(cluster, list(found.values()))
    with transaction.atomic():
        if records:
            UsageRecord.objects.bulk_create(
                records,
                update_conflicts=True,
                unique_fields=["cluster", "slurm_job_id"],
                update_fields=_UPDATED,
            )
        state.last_run_at = now
        state.last_calls = result.calls
        state.last_rows = len(records)
        state.last_error = "\n".join(result.errors)
        if not result.errors:
            # A window read with errors is read again next time, whole.
            state.collected_until = now
        state.save()
    result.rows = len(records)
    if result.errors:
        log.warning("usage of cluster %s: %s", cluster.name, "; ".join(result.errors))
    return result


def usage_collect_all() -> list[Collected]:
    return [usage_collect(cluster=c) for c in Cluster.objects.filter(is_active=True).select_related("operator_grant")]


__all__ = ["usage_collect", "usage_collect_all", "Collected", "OVERLAP", "FIRST_WINDOW"]
