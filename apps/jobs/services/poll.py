"""One tracking cycle: per cluster account, one squeue for every active job, then one
sacct for those that left the queue; never one Slurm call per job."""

import logging
import threading
from dataclasses import dataclass

from django.utils import timezone

from apps.clusters.models import ClusterGrant
from apps.clusters.transport import slurm_client
from apps.integrations.slurm.base import JobInfo, SlurmError
from apps.integrations.slurm.parsing import SqueueMemo

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
    examined: int = 0  # jobs whose rows were loaded and compared (the others: unchanged, skipped)


# What a steady cycle would compare, per job: the hub's side (these columns; updated_at moves
# with every write through the ORM, the others guard writers that bypass it) and Slurm's side
# (the squeue rows' fields a cycle reads). A job whose both sides are what they were when the
# last cycle compared them and found nothing to write is skipped: comparing again would find
# nothing again, and building 10,000 model objects to learn that is most of a steady cycle.
_HUB_SIDE = ("status", "slurm_state", "reason", "estimated_start", "started_at", "updated_at")
# (id, grant_id, slurm_job_id, last_error, *_HUB_SIDE): one tuple per active job
_ID, _GRANT, _SLURM_ID, _LAST_ERROR = range(4)
_unchanged: dict[int, dict[int, tuple]] = {}  # grant pk -> {job pk: (hub side, Slurm side)}
# And the grant's last squeue answer, row by row with what was parsed from it: a steady cycle
# parses only the rows that changed (parsing.SqueueMemo says why that is safe).
_squeue_memos: dict[int, SqueueMemo] = {}  # grant pk -> memo
_unchanged_lock = threading.Lock()


def _slurm_side(infos: list[JobInfo]) -> tuple:
    return tuple((i.job_id, i.array_job_id, i.array_task_id, i.state, i.reason, i.start_time) for i in infos)


def _hub_side(job: Job) -> tuple:
    return tuple(getattr(job, name) for name in _HUB_SIDE)


def jobs_poll() -> PollStats:
    """One tracking cycle: per cluster and cluster account, one squeue for every active job,
    then one sacct for those that left the queue; never one call per job."""
    stats = PollStats()
    active = (
        Job.objects.filter(status__in=[S.PENDING, S.RUNNING])
        .exclude(slurm_job_id="")
        .order_by("grant_id")
        # Tuples of the few columns that tell whether a job may have changed; the model
        # objects only for the jobs that may have (see _poll_group).
        .values_list("id", "grant_id", "slurm_job_id", "last_error", *_HUB_SIDE)
    )
    groups: dict[int, list[tuple]] = {}
    for row in active:
        groups.setdefault(row[_GRANT], []).append(row)
    grants = ClusterGrant.objects.select_related("cluster").in_bulk(list(groups))
    with _unchanged_lock:
        for gone in set(_unchanged) - set(groups):
            del _unchanged[gone]  # no active job left on that account
        for gone in set(_squeue_memos) - set(groups):
            del _squeue_memos[gone]
    stats.clusters = len({grants[g].cluster_id for g in groups})
    for grant_id, rows in groups.items():
        grant = grants[grant_id]
        stats.groups += 1
        stats.jobs += len(rows)
        try:
            calls, examined = _poll_group(grant, rows)
            stats.slurm_calls += calls
            stats.examined += examined
        except SlurmError as exc:
            stats.errors += 1
            log.warning("tracking %s on %s failed: %s", grant.cluster_username, grant.cluster.name, exc.message)
            _keep_last_known_state(grant, [row[_ID] for row in rows], exc.message)
    return stats


# An outage is a state, not a failure: the jobs keep the state Slurm last gave them, and say
# why it may be stale. The note is cleared by the first poll that gets through.
OUTAGE_NOTE = (
    "Cluster {cluster} cannot be asked about this job since {since:%H:%M:%S} UTC ({error}); "
    "its last known state is shown."
)
_OUTAGE_PREFIX = "Cluster "


def _keep_last_known_state(grant: ClusterGrant, pks: list[int], error: str) -> None:
    note = OUTAGE_NOTE.format(cluster=grant.cluster.name, since=timezone.now(), error=error[:300])
    # Only jobs not already noted: the first failure's time stays, and one UPDATE per group.
    Job.objects.filter(pk__in=pks, status__in=[S.PENDING, S.RUNNING], last_error="").update(last_error=note[:1000])


def _clear_outage_note(rows: list[tuple]) -> None:
    if any(row[_LAST_ERROR].startswith(_OUTAGE_PREFIX) for row in rows):
        Job.objects.filter(
            pk__in=[row[_ID] for row in rows],
            last_error__startswith=_OUTAGE_PREFIX,
            last_error__contains="last known state",
        ).update(last_error="")


def _poll_group(grant: ClusterGrant, rows: list[tuple]) -> tuple[int, int]:
    """Returns the Slurm calls made and the jobs examined."""
    calls = 0
    by_id = {row[_SLURM_ID]: row for row in rows}
    with _unchanged_lock:
        before = _unchanged.get(grant.pk, {})
        memo = _squeue_memos.setdefault(grant.pk, SqueueMemo())
    with slurm_client(grant) as client:
        queue = client.queue(grant.cluster_username, memo=memo)
        calls += 1
        seen: dict[str, list[JobInfo]] = {}
        for info in queue:
            key = info.array_job_id or info.job_id
            if key in by_id:
                seen.setdefault(key, []).append(info)
        # Skipped: a job still in the queue whose rows and hub columns are what the last cycle
        # compared and found nothing new in. Everything else (a new hub job, one that left the
        # queue, a changed state, reason or start, a row changed in the hub) is examined in full.
        skipped: dict[int, tuple] = {}
        for jid, row in by_id.items():
            known = before.get(row[_ID])
            if known is not None and jid in seen and known == (row[4:], _slurm_side(seen[jid])):
                skipped[row[_ID]] = known
        examine = {row[_ID] for row in rows if row[_ID] not in skipped}
        jobs = {job.slurm_job_id: job for job in _load(grant, examine)}
        finished = [jid for jid in jobs if jid not in seen or combined_state(seen[jid]) in Job.TERMINAL]
        # squeue forgets an array task as soon as it ends, while its siblings still run:
        # accounting (in the same one sacct) says how such a task ended.
        partly = _arrays_with_ended_tasks({jid: jobs[jid] for jid in seen if jid in jobs and jid not in finished}, seen)
        accounting: dict[str, list[JobInfo]] = {}
        if finished or partly:
            for info in client.accounting([*finished, *partly]):
                accounting.setdefault(info.array_job_id or info.job_id, []).append(info)
            calls += 1
    _clear_outage_note(rows)
    # Results are written after the connection is closed, in one transaction for the group.
    items = []
    for jid, job in jobs.items():
        if jid in accounting and complete_record(job, accounting[jid]):
            items.append((job, accounting[jid], True))
        elif jid in seen:
            live = {task_key(i) for i in seen[jid]}
            ended = [i for i in accounting.get(jid, []) if task_key(i) and task_key(i) not in live]
            items.append((job, [*seen[jid], *ended], False))
    untouched: list[Job] = []
    apply_many(items, untouched=untouched)
    # Remembered for the next cycle: what this one compared and found nothing to write in. Not
    # arrays (their tasks are written every cycle) nor jobs that left the queue or ended.
    remember = dict(skipped)
    for job in untouched:
        jid = job.slurm_job_id
        if not job.is_array and jid in seen and jid not in accounting and jid not in finished:
            remember[job.pk] = (_hub_side(job), _slurm_side(seen[jid]))
    with _unchanged_lock:
        _unchanged[grant.pk] = remember
    return calls, len(jobs)


def _load(grant: ClusterGrant, pks: set[int]) -> list[Job]:
    """The jobs to examine, with the columns a cycle compares. Many (a first cycle): the
    group's active jobs in one read, since a list of 10,000 ids is no index range (and more
    than SQLite takes in one statement); a few: by id."""
    if not pks:
        return []
    if len(pks) > 500:
        group = Job.objects.filter(grant=grant, status__in=[S.PENDING, S.RUNNING]).exclude(slurm_job_id="")
        jobs = [job for job in group.only(*_POLL_COLUMNS) if job.pk in pks]
    else:
        jobs = list(Job.objects.filter(pk__in=pks).only(*_POLL_COLUMNS))
    for job in jobs:
        job.grant = grant
    return jobs


def _arrays_with_ended_tasks(jobs: dict[str, Job], seen: dict[str, list[JobInfo]]) -> list[str]:
    """The arrays still in the queue: a task of theirs may have ended (and left squeue) since
    the last cycle, maybe before the hub ever saw it run; the cycle's one sacct covers them."""
    return [jid for jid, job in jobs.items() if job.is_array and jid in seen]
