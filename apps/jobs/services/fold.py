"""Folding what Slurm says about a job (all rows of an array) onto the job: one
compare-and-swap transition, and only the fields that changed."""

from dataclasses import asdict

from django.db import transaction
from django.utils import timezone

from apps.core.bulk import bulk_write
from apps.core.tasks import enqueue
from apps.core.transitions import transition_many
from apps.integrations.slurm import states
from apps.integrations.slurm.base import JobInfo

from ..models import Job, JobTask

S = Job.Status


def hub_state(slurm_state: str) -> Job.Status | None:
    """The job status one Slurm state word means (None for a word the hub does not know)."""
    state = states.hub_state(slurm_state)
    return S(state) if state else None


def array_head(infos: list[JobInfo]) -> str:
    first = infos[0]
    return first.array_job_id or first.job_id


def combined_state(infos: list[JobInfo]) -> Job.Status | None:
    state = states.combined_state(i.state for i in infos)
    return S(state) if state else None


def _info_dict(info: JobInfo) -> dict:
    data = {k: v for k, v in asdict(info).items() if v not in (None, "")}
    for key in ("submit_time", "start_time", "end_time"):
        if key in data:
            data[key] = data[key].isoformat()
    return data


def task_key(info: JobInfo) -> str | None:
    task = info.array_task_id
    # A pending array that Slurm has not split yet comes as one row with a range.
    return task if task is not None and task.isdigit() else None


def _plan(job: Job, infos: list[JobInfo], final: bool) -> tuple[Job.Status | None, dict, bool, JobInfo]:
    """What Slurm's rows mean for the job: its new status (if any), the fields to record,
    whether the status moves, and the row that speaks for the whole job."""
    state = combined_state(infos)
    head = next((i for i in infos if not i.is_array_task), infos[0])
    fields: dict = {"slurm_state": head.state[:32]}
    pending = next((i for i in infos if hub_state(i.state) == S.PENDING), None)
    fields["reason"] = (pending.reason if pending else "")[:255]
    fields["estimated_start"] = pending.start_time if pending else None
    running = [i.start_time for i in infos if i.start_time and hub_state(i.state) != S.PENDING]
    if running and not job.started_at:
        fields["started_at"] = min(running)
    if final or (state in Job.TERMINAL):
        fields["accounting"] = (
            _info_dict(head)
            if not job.is_array
            else {
                "tasks": len([i for i in infos if task_key(i)]),
                "elapsed_seconds": max((i.elapsed_seconds or 0) for i in infos),
                "node_list": ",".join(sorted({i.node_list for i in infos if i.node_list})),
            }
        )
        # The highest code of the tasks, unknown when a failed task's code is (slurmrestd 22.05
        # gives none for a FAILED job): "0" for an array with a failed task would be false.
        unknown = any(i.exit_code is None and i.state == "FAILED" for i in infos)
        codes = [i.exit_code for i in infos if i.exit_code is not None]
        fields["exit_code"] = None if unknown else max(codes, default=None)
        ends = [i.end_time for i in infos if i.end_time]
        fields["finished_at"] = max(ends) if ends else timezone.now()
    moves = bool(state and state != job.status and state in Job.TRANSITIONS.get(job.status, ()))
    return state, fields, moves, head


def _write_tasks(job: Job, infos: list[JobInfo]) -> None:
    for info in infos:
        key = task_key(info)
        if key is None:
            continue
        JobTask.objects.update_or_create(
            job=job,
            task_id=key,
            defaults={
                "slurm_job_id": info.job_id,
                "state": info.state[:32],
                "reason": info.reason[:255],
                "exit_code": info.exit_code,
                "accounting": _info_dict(info),
            },
        )


def apply_infos(job: Job, infos: list[JobInfo], *, final: bool = False) -> Job:
    """Record what Slurm says about one job (all rows of an array) with one CAS transition."""
    apply_many([(job, infos, final)])
    return job


def apply_many(items: list[tuple[Job, list[JobInfo], bool]], *, untouched: list[Job] | None = None) -> int:
    """Record what Slurm says about many jobs (one tracking cycle) in one transaction and a
    few statements: the jobs whose status moves, one bulk compare-and-swap transition per new
    status with all their audit events appended at once; the jobs where only Slurm's details
    changed (state word, reason, expected start), one bulk write guarded by their status;
    unchanged jobs, nothing at all (appended to `untouched` when given). Returns how many jobs
    were written."""
    moving: dict[str, list[tuple[Job, dict, dict]]] = {}
    details: list[Job] = []
    arrays: list[tuple[Job, list[JobInfo]]] = []
    names: set[str] = set()
    expected: dict[int, str] = {}
    now = timezone.now()
    for job, infos, final in items:
        state, fields, moves, head = _plan(job, infos, final)
        if not job.is_array and not moves and all(getattr(job, k) == v for k, v in fields.items()):
            if untouched is not None:
                untouched.append(job)
            continue  # nothing new: no write
        if job.is_array:
            arrays.append((job, infos))
        if moves:
            data = {"slurm_state": head.state, "exit_code": fields.get("exit_code")}
            moving.setdefault(state, []).append((job, fields, data))
            continue
        # A cycle sees most jobs unchanged: write only what Slurm says differently.
        changed = {k: v for k, v in fields.items() if getattr(job, k) != v}
        if changed:
            for k, v in changed.items():
                setattr(job, k, v)
            job.updated_at = now
            names.update(changed)
            expected[job.pk] = job.status
            details.append(job)
    if not (moving or details or arrays):
        return 0
    written = 0
    with transaction.atomic():
        for job, infos in arrays:
            _write_tasks(job, infos)
        if details:
            written += bulk_write(Job, details, [*names, "updated_at"], only_if="status", expected=expected)
        for state, changes in moving.items():
            moved = transition_many(
                model=Job, changes=changes, to=state, transitions=Job.TRANSITIONS, action=f"job.{state}"
            )
            # the others: the user cancelled or another poll won; the next cycle sees the new state
            written += len(moved)
            if state in Job.TERMINAL:
                for job in moved:
                    enqueue("apps.jobs.tasks.job_finalize", job.pk)
    return written


def complete_record(job: Job, infos: list[JobInfo]) -> bool:
    """Accounting tells the end only once every row (every array task) has ended; slurmdbd
    can lag behind the controller by a cycle."""
    if combined_state(infos) not in Job.TERMINAL:
        return False
    expected = job.effective_request.get("array_task_count") if job.is_array else None
    if expected is None:
        return True
    # Tasks cancelled before they started stay one row with a range ("[1-9]"), ended too.
    ranges = [i for i in infos if i.array_task_id and not task_key(i)]
    return bool(ranges) or len([i for i in infos if task_key(i)]) >= expected
