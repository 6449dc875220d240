"""One tracking cycle: per cluster account, one squeue for every active job, then one
sacct for those that left the queue; never one Slurm call per job."""

import logging
from dataclasses import dataclass

from django.utils import timezone

from apps.clusters.models import ClusterGrant
from apps.clusters.transport import slurm_client
from apps.integrations.slurm.base import JobInfo, SlurmError

from ..models import Job
from .fold import apply_many, combined_state, complete_record, task_key

log = logging.getLogger(__name__)
S = Job.Status


_POLL_COLUMNS = (
    "id",
    "uuid",
    "name",
    "status",
    "grant",
    "cluster",
    "cluster_username",
    "slurm_job_id",
    "slurm_state",
    "reason",
    "last_error",
    "estimated_start",
    "started_at",
    "finished_at",
    "exit_code",
    "accounting",
    "effective_request",
    "updated_at",
)


@dataclass
class PollStats:
    clusters: int = 0
    groups: int = 0
    jobs: int = 0
    slurm_calls: int = 0
    errors: int = 0


def jobs_poll() -> PollStats:
    """One tracking cycle: per cluster and cluster account, one squeue for every active job,
    then one sacct for those that left the queue; never one call per job."""
    stats = PollStats()
    active = (
        Job.objects.filter(status__in=[S.PENDING, S.RUNNING])
        .exclude(slurm_job_id="")
        # Only what a cycle reads and compares: no script, metrics or parameters, and the
        # grant and cluster once per group below rather than once per job.
        .only(*_POLL_COLUMNS)
        .order_by("grant_id")
    )
    groups: dict[int, list[Job]] = {}
    for job in active:
        groups.setdefault(job.grant_id, []).append(job)
    grants = ClusterGrant.objects.select_related("cluster").in_bulk(list(groups))
    for grant_id, jobs in groups.items():
        jobs[0].grant = grants[grant_id]
    stats.clusters = len({jobs[0].cluster_id for jobs in groups.values()})
    for jobs in groups.values():
        stats.groups += 1
        stats.jobs += len(jobs)
        try:
            stats.slurm_calls += _poll_group(jobs)
        except SlurmError as exc:
            stats.errors += 1
            cluster = jobs[0].grant.cluster.name
            log.warning("tracking %s on %s failed: %s", jobs[0].cluster_username, cluster, exc.message)
            _keep_last_known_state(jobs, exc.message)
    return stats


# An outage is a state, not a failure: the jobs keep the state Slurm last gave them, and say
# why it may be stale. The note is cleared by the first poll that gets through.
OUTAGE_NOTE = (
    "Cluster {cluster} cannot be asked about this job since {since:%H:%M:%S} UTC ({error}); "
    "its last known state is shown."
)
_OUTAGE_PREFIX = "Cluster "


def _keep_last_known_state(jobs: list[Job], error: str) -> None:
    note = OUTAGE_NOTE.format(cluster=jobs[0].grant.cluster.name, since=timezone.now(), error=error[:300])
    # Only jobs not already noted: the first failure's time stays, and one UPDATE per group.
    Job.objects.filter(pk__in=[j.pk for j in jobs], status__in=[S.PENDING, S.RUNNING], last_error="").update(
        last_error=note[:1000]
    )


def _clear_outage_note(jobs: list[Job]) -> None:
    if any(j.last_error.startswith(_OUTAGE_PREFIX) for j in jobs):
        Job.objects.filter(
            pk__in=[j.pk for j in jobs], last_error__startswith=_OUTAGE_PREFIX, last_error__contains="last known state"
        ).update(last_error="")


def _poll_group(jobs: list[Job]) -> int:
    grant = jobs[0].grant
    calls = 0
    by_id = {job.slurm_job_id: job for job in jobs}
    with slurm_client(grant) as client:
        queue = client.queue(grant.cluster_username)
        calls += 1
        seen: dict[str, list[JobInfo]] = {}
        for info in queue:
            key = info.array_job_id or info.job_id
            if key in by_id:
                seen.setdefault(key, []).append(info)
        finished = [jid for jid in by_id if jid not in seen or combined_state(seen[jid]) in Job.TERMINAL]
        # squeue forgets an array task as soon as it ends, while its siblings still run:
        # accounting (in the same one sacct) says how such a task ended.
        partly = _arrays_with_ended_tasks({jid: by_id[jid] for jid in seen if jid not in finished}, seen)
        accounting: dict[str, list[JobInfo]] = {}
        if finished or partly:
            for info in client.accounting([*finished, *partly]):
                accounting.setdefault(info.array_job_id or info.job_id, []).append(info)
            calls += 1
    _clear_outage_note(jobs)
    # Results are written after the connection is closed, in one transaction for the group.
    items = []
    for jid, job in by_id.items():
        if jid in accounting and complete_record(job, accounting[jid]):
            items.append((job, accounting[jid], True))
        elif jid in seen:
            live = {task_key(i) for i in seen[jid]}
            ended = [i for i in accounting.get(jid, []) if task_key(i) and task_key(i) not in live]
            items.append((job, [*seen[jid], *ended], False))
    apply_many(items)
    return calls


def _arrays_with_ended_tasks(jobs: dict[str, Job], seen: dict[str, list[JobInfo]]) -> list[str]:
    """The arrays still in the queue: a task of theirs may have ended (and left squeue) since
    the last cycle, maybe before the hub ever saw it run; the cycle's one sacct covers them."""
    return [jid for jid, job in jobs.items() if job.is_array and jid in seen]
