"""Writes for jobs: create, submit, reconcile, track, cancel, rerun.

The rule everywhere: record the intent and commit, talk to the cluster with no transaction
open, then record the result with a compare-and-swap transition."""

import hashlib
import logging
import math
import re
import shutil
import tempfile
import uuid as uuid_lib
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.clusters.models import Cluster, ClusterGrant
from apps.clusters.selectors import grant_for_submission
from apps.clusters.transport import slurm_client, ssh_for_files
from apps.core.errors import Conflict, PermissionDenied, Unavailable, ValidationFailed
from apps.core.tasks import enqueue
from apps.core.transitions import transition
from apps.datasets.selectors import dataset_env, dataset_versions_for_job
from apps.datasets.services import dataset_version_verify
from apps.integrations.mlflow.base import MlflowError, MlflowUnavailable
from apps.integrations.slurm.base import (
    AmbiguousSubmitError,
    JobInfo,
    SlurmError,
    SlurmRejected,
    SubmitRequest,
    TransportError,
)

from . import inputs, tracking, validation
from .models import Job, JobTask

log = logging.getLogger(__name__)
S = Job.Status

# Slurm's job states (squeue and sacct spell them the same) to the hub's.
SLURM_STATES = {
    "PENDING": S.PENDING,
    "REQUEUED": S.PENDING,
    "REQUEUE_HOLD": S.PENDING,
    "REQUEUE_FED": S.PENDING,
    "RESV_DEL_HOLD": S.PENDING,
    "CONFIGURING": S.RUNNING,
    "RUNNING": S.RUNNING,
    "COMPLETING": S.RUNNING,
    "SUSPENDED": S.RUNNING,
    "STOPPED": S.RUNNING,
    "SIGNALING": S.RUNNING,
    "STAGE_OUT": S.RUNNING,
    "RESIZING": S.RUNNING,
    "COMPLETED": S.COMPLETED,
    "FAILED": S.FAILED,
    "BOOT_FAIL": S.FAILED,
    "DEADLINE": S.FAILED,
    "SPECIAL_EXIT": S.FAILED,
    "PREEMPTED": S.FAILED,
    "REVOKED": S.FAILED,
    "CANCELLED": S.CANCELLED,
    "TIMEOUT": S.TIMEOUT,
    "OUT_OF_MEMORY": S.OUT_OF_MEMORY,
    "NODE_FAIL": S.NODE_FAIL,
}
# When array tasks end differently, the job shows the most telling outcome.
OUTCOME_ORDER = [S.OUT_OF_MEMORY, S.NODE_FAIL, S.TIMEOUT, S.FAILED, S.CANCELLED, S.COMPLETED]


def hub_state(slurm_state: str) -> str | None:
    # sacct writes "CANCELLED by 1000"; squeue may add "+" for more states.
    word = (slurm_state or "").split(" ")[0].rstrip("+").upper()
    return SLURM_STATES.get(word)


# ---------------------------------------------------------------- validation and creation


def job_validate(
    *, user, cluster: Cluster, script: str, parameters=None
) -> tuple[validation.Validation, ClusterGrant | None]:
    grant = grant_for_submission(user=user, cluster=cluster)
    workdir = f"{grant.job_root}/<job id>" if grant else "/<job id>"
    result, _ = validation.validate(script=script, grant=grant, workdir=workdir, parameters=parameters)
    if grant is None:
        result.add(f"You have no active grant on cluster {cluster.name}; request access on the cluster's page.")
    return result, grant


def job_create(
    *,
    user,
    cluster: Cluster,
    name: str,
    script: str,
    parameters=None,
    rerun_of: Job | None = None,
    reproduced_from: Job | None = None,
    dataset_versions=(),
    code: dict | None = None,
    image: str = "",
    image_digest: str = "",
    code_commit: str = "",
    verify_datasets: bool = False,
    register_model_as: str = "",
    team=None,
) -> Job:
    """Check the script and its inputs against the user's grant, record the job with every
    input, and queue its submission. Nothing recorded here can change afterwards."""
    grant = grant_for_submission(user=user, cluster=cluster)
    if grant is None:
        raise PermissionDenied(f"You have no active grant on cluster {cluster.name}.")
    code = code or {}
    if code and not str(code.get("repo", "")).strip():
        raise ValidationFailed("code needs a repo (a git URL or path the cluster can read) and optionally a ref.")
    if code and (urlsplit(str(code["repo"]).strip()).username or urlsplit(str(code["repo"]).strip()).password):
        # The repo URL is recorded, audited, tagged on the run and shown: it must hold no secret.
        raise ValidationFailed(
            "The code repository URL contains a user name or token; give a URL without credentials "
            "(the cluster account's own git credentials or SSH key are used to fetch it)."
        )
    versions = dataset_versions_for_job(user, list(dataset_versions), cluster) if dataset_versions else []
    team = team or _default_team(user)
    name = (name or "").strip()[:200] or "job"
    job_uuid = uuid_lib.uuid4()
    workdir = f"{grant.job_root}/{job_uuid}"
    result, params = validation.validate(script=script, grant=grant, workdir=workdir, parameters=parameters)
    if grant.max_active_jobs is not None:
        active = Job.objects.filter(grant=grant).exclude(status__in=Job.TERMINAL).count()
        if active >= grant.max_active_jobs:
            result.add(
                f"You already have {active} active jobs on {cluster.name}, your grant's limit; "
                "wait for one to finish or cancel one."
            )
    if not result.ok:
        raise ValidationFailed(
            "The job does not fit your grant: "
            + "; ".join((f"line {p['line']}: " if p["line"] else "") + p["message"] for p in result.problems),
            extra={"problems": result.problems, "effective_request": result.effective_request},
        )
    is_array = bool(result.effective_request.get("array"))
    stdout_path, stderr_path = validation.log_paths(workdir, is_array)
    with transaction.atomic():
        job = Job.objects.create(
            uuid=job_uuid,
            owner=user,
            grant=grant,
            cluster=cluster,
            name=name,
            script=script,
            script_sha256=hashlib.sha256(script.encode("utf-8")).hexdigest(),
            parameters=params,
            effective_request=result.effective_request,
            hub_args=validation.hub_args(stdout_path=stdout_path, stderr_path=stderr_path),
            cluster_username=grant.cluster_username,
            marker=f"axle-{job_uuid.hex}",
            workdir=workdir,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
            rerun_of=rerun_of,
            reproduced_from=reproduced_from,
            team=team,
            code_repo=str(code.get("repo", "")).strip(),
            code_ref=str(code.get("ref", "") or "").strip(),
            code_commit=code_commit,
            image_path=(image or "").strip(),
            image_digest=image_digest,
            verify_datasets=verify_datasets,
            register_model_as=(register_model_as or "").strip(),
            tracking_mode=cluster.tracking_mode,
        )
        job.dataset_versions.set(versions)
        audit_record(
            action="job.created",
            subject=job,
            actor=user,
            after={
                "status": job.status,
                "cluster": cluster.name,
                "cluster_username": grant.cluster_username,
                "script_sha256": job.script_sha256,
                "rerun_of": str(rerun_of.uuid) if rerun_of else None,
                "reproduced_from": str(reproduced_from.uuid) if reproduced_from else None,
                "dataset_versions": [str(v.uuid) for v in versions],
                "code": code or None,
                "image": job.image_path or None,
            },
        )
        enqueue("apps.jobs.tasks.job_submit", job.pk)
    return job


def _default_team(user):
    membership = user.memberships.select_related("team").order_by("created_at").first()
    return membership.team if membership else None


def job_rerun(*, user, job: Job) -> Job:
    """A new job with the same script, parameters and cluster (and inputs as first asked)."""
    if job.owner_id != user.pk:
        raise PermissionDenied("Only the job's owner can run it again.")
    return job_create(
        user=user,
        cluster=job.cluster,
        name=job.name,
        script=job.script,
        parameters=job.parameters,
        rerun_of=job,
        dataset_versions=[v.uuid for v in job.dataset_versions.all()],
        code={"repo": job.code_repo, "ref": job.code_ref} if job.code_repo else None,
        image=job.image_path,
        verify_datasets=job.verify_datasets,
        register_model_as=job.register_model_as,
        team=job.team,
    )


def job_reproduce(*, user, job: Job) -> Job:
    """A new job with identical recorded inputs: the same script, parameters, dataset
    versions, code commit (not the branch) and image digest, linked to the original."""
    if job.owner_id != user.pk:
        raise PermissionDenied("Only the job's owner can reproduce it.")
    if job.code_repo and not job.code_commit:
        raise Conflict("The original job's code commit was never resolved, so it cannot be reproduced exactly.")
    return job_create(
        user=user,
        cluster=job.cluster,
        name=f"{job.name} (reproduction)"[:200],
        script=job.script,
        parameters=job.parameters,
        reproduced_from=job,
        dataset_versions=[v.uuid for v in job.dataset_versions.all()],
        code={"repo": job.code_repo, "ref": job.code_commit} if job.code_repo else None,
        code_commit=job.code_commit,
        image=job.image_path,
        image_digest=job.image_digest,
        verify_datasets=True,
        team=job.team,
    )


# ---------------------------------------------------------------- submission


def _backoff(attempts: int) -> timedelta:
    base = settings.AXLE_SUBMIT_BACKOFF_SECONDS
    return timedelta(seconds=min(base * (2 ** max(attempts - 1, 0)), 900))


def _submit_request(job: Job, env: dict[str, str]) -> SubmitRequest:
    return SubmitRequest(
        script=job.script,
        job_name=job.name,
        comment=job.marker,
        workdir=job.workdir,
        env={**job.parameters, **env},
        extra_args=list(job.hub_args),
    )


class _Superseded(Exception):
    """The job left `submitting` while its inputs were being resolved."""


def _prepare(job: Job, client) -> dict[str, str]:
    """Resolve the inputs, open the MLflow run and lay out the job folder, all before sbatch.
    Returns the job's environment. Records what it resolved at once (never edited later)."""
    files = ssh_for_files(client)
    if files is not None:
        files.run(["mkdir", "-p", "--", job.workdir])
    resolved: dict = {}

    def still_mine() -> None:
        # A heartbeat between long steps (hashing an image, re-verifying a dataset), so the
        # stuck-submission check does not take a busy worker for a dead one.
        if not Job.objects.filter(pk=job.pk, status=S.SUBMITTING).update(updated_at=timezone.now()):
            raise _Superseded

    if job.code_repo and not job.code_commit:
        resolved["code_commit"] = inputs.resolve_commit(files, job.code_repo, job.code_ref)
    if job.image_path:
        still_mine()
        digest = inputs.image_digest(files, job.image_path)
        if job.image_digest and digest != job.image_digest:
            raise inputs.InputError(
                f"The image {job.image_path} changed since it was recorded ({job.image_digest}, now {digest})."
            )
        resolved["image_digest"] = digest
    versions = list(job.dataset_versions.select_related("dataset"))
    if job.verify_datasets:
        for version in versions:
            still_mine()
            check = dataset_version_verify(version=version, user=job.owner)
            if not check:
                raise inputs.InputError(f"Dataset {version.dataset.name} v{version.number}: {check.message}")
    for key, value in resolved.items():
        setattr(job, key, value)
    experiment_id, run_id = tracking.start_run(job)
    resolved.update(mlflow_experiment_id=experiment_id, mlflow_run_id=run_id)
    # Resolving inputs may outlast AXLE_SUBMIT_STUCK_SECONDS: if the job was taken for stuck
    # meanwhile, it is another worker's now, and a sbatch from here would make a second job.
    if not Job.objects.filter(pk=job.pk, status=S.SUBMITTING).update(**resolved, updated_at=timezone.now()):
        raise _Superseded
    job.mlflow_experiment_id, job.mlflow_run_id = experiment_id, run_id
    if job.tracking_mode == Cluster.TrackingMode.FILE:
        inputs.write_files(files, tracking.mlruns_dir(job), tracking.bootstrap_file_store(job, experiment_id, run_id))
    env = {**tracking.job_environment(job, experiment_id, run_id), **dataset_env(versions)}
    if job.code_repo:
        env.update(AXLE_CODE_REPO=job.code_repo, AXLE_CODE_COMMIT=job.code_commit)
    if job.image_path:
        env["AXLE_IMAGE"] = job.image_path
    return env


def job_submit(*, job_id: int) -> Job | None:
    """Deliver a queued job to Slurm. Safe to run twice: only the run that moves the job
    from queued to submitting goes on."""
    job = Job.objects.select_related("grant__cluster").filter(pk=job_id).first()
    if job is None or job.status != S.QUEUED:
        return job
    if job.next_attempt_at and job.next_attempt_at > timezone.now():
        return job
    try:
        transition(
            obj=job,
            to=S.SUBMITTING,
            transitions=Job.TRANSITIONS,
            action="job.submitting",
            fields={"attempts": job.attempts + 1},
        )
    except Conflict:
        return job  # another worker took it

    # No transaction is open from here until the answer is recorded.
    try:
        with slurm_client(job.grant) as client:
            env = _prepare(job, client)
            slurm_job_id = client.submit(_submit_request(job, env))
    except _Superseded:
        return Job.objects.get(pk=job.pk)
    except inputs.InputError as exc:
        return transition(
            obj=job,
            to=S.FAILED,
            transitions=Job.TRANSITIONS,
            action="job.inputs_refused",
            fields={"failure_message": str(exc), "finished_at": timezone.now()},
            data={"error": str(exc)},
        )
    except (MlflowUnavailable, Unavailable) as exc:
        return _requeue(job, str(exc), what="MLflow or the cluster")
    except MlflowError as exc:
        return transition(
            obj=job,
            to=S.FAILED,
            transitions=Job.TRANSITIONS,
            action="job.tracking_refused",
            fields={"failure_message": f"MLflow refused the job's run: {exc}", "finished_at": timezone.now()},
            data={"error": str(exc)},
        )
    except SlurmRejected as exc:
        return transition(
            obj=job,
            to=S.FAILED,
            transitions=Job.TRANSITIONS,
            action="job.rejected",
            fields={"failure_message": exc.message, "finished_at": timezone.now(), "last_error": ""},
            data={"slurm_message": exc.message},
        )
    except AmbiguousSubmitError as exc:
        job = transition(
            obj=job,
            to=S.UNKNOWN,
            transitions=Job.TRANSITIONS,
            action="job.submit_ambiguous",
            fields={"unknown_since": timezone.now(), "last_error": exc.message},
            data={"error": exc.message},
        )
        enqueue("apps.jobs.tasks.job_reconcile", job.pk)
        return job
    except TransportError as exc:
        if exc.permanent:
            return transition(
                obj=job,
                to=S.FAILED,
                transitions=Job.TRANSITIONS,
                action="job.submit_failed",
                fields={"failure_message": exc.message, "finished_at": timezone.now()},
                data={"error": exc.message},
            )
        return _requeue(job, exc.message)
    except SlurmError as exc:
        return _requeue(job, exc.message)
    return transition(
        obj=job,
        to=S.PENDING,
        transitions=Job.TRANSITIONS,
        action="job.submitted",
        fields={
            "slurm_job_id": slurm_job_id,
            "submitted_at": timezone.now(),
            "last_error": "",
            "next_attempt_at": None,
        },
        data={"slurm_job_id": slurm_job_id},
    )


def _requeue(job: Job, error: str, what: str = "") -> Job:
    """The cluster (or MLflow) could not be reached: the job waits in the hub and tries again later."""
    retry_at = timezone.now() + _backoff(job.attempts)
    what = what or f"Cluster {job.cluster.name}"
    message = f"{what} could not be reached ({error}); trying again at {retry_at:%H:%M:%S} UTC."
    return transition(
        obj=job,
        to=S.QUEUED,
        transitions=Job.TRANSITIONS,
        action="job.submit_delayed",
        fields={"next_attempt_at": retry_at, "last_error": message},
        data={"error": error},
    )


# ---------------------------------------------------------------- reconciliation


def job_reconcile(*, job_id: int) -> Job | None:
    """Find a job whose submission outcome is unknown by its marker; never submit blindly."""
    job = Job.objects.select_related("grant__cluster").filter(pk=job_id).first()
    if job is None or job.status != S.UNKNOWN:
        return job
    try:
        with slurm_client(job.grant) as client:
            found = client.find_by_comment(job.marker)
    except SlurmError as exc:
        Job.objects.filter(pk=job.pk, status=S.UNKNOWN).update(
            last_error=f"Reconciliation could not reach the cluster: {exc.message}"
        )
        return job
    return _reconcile_with(job, found)


def jobs_reconcile_unknown() -> int:
    """Reconcile every unknown job, with one marker search per cluster account."""
    groups: dict[int, list[Job]] = {}
    for job in Job.objects.filter(status=S.UNKNOWN).select_related("grant__cluster"):
        groups.setdefault(job.grant_id, []).append(job)
    for jobs in groups.values():
        try:
            with slurm_client(jobs[0].grant) as client:
                found = client.find_by_comments([j.marker for j in jobs])
        except SlurmError as exc:
            Job.objects.filter(pk__in=[j.pk for j in jobs], status=S.UNKNOWN).update(
                last_error=f"Reconciliation could not reach the cluster: {exc.message}"
            )
            continue
        for job in jobs:
            try:
                _reconcile_with(job, found.get(job.marker, []))
            except Conflict:
                continue  # someone else moved it meanwhile
    return sum(len(j) for j in groups.values())


def _reconcile_with(job: Job, found: list[JobInfo]) -> Job:
    if found:
        head = _array_head(found)
        state = _combined_state(found) or S.PENDING
        job = transition(
            obj=job,
            to=state,
            transitions=Job.TRANSITIONS,
            action="job.reconciled",
            fields={
                "slurm_job_id": head,
                "submitted_at": job.submitted_at or timezone.now(),
                "unknown_since": None,
                "last_error": "",
            },
            data={"slurm_job_id": head, "found_by": "marker"},
        )
        _apply_infos(job, found)
        return job
    grace = timedelta(seconds=settings.AXLE_RECONCILE_GRACE_SECONDS)
    if job.unknown_since and timezone.now() - job.unknown_since >= grace:
        # Neither the queue nor accounting knows the marker after the grace period: the
        # submission never reached Slurm, so sending it again cannot make a second job.
        job = transition(
            obj=job,
            to=S.QUEUED,
            transitions=Job.TRANSITIONS,
            action="job.requeued",
            fields={
                "unknown_since": None,
                "next_attempt_at": None,
                "last_error": "The earlier submission never reached Slurm; submitting again.",
            },
            data={"reason": "marker not found on the cluster"},
        )
        enqueue("apps.jobs.tasks.job_submit", job.pk)
    return job


def jobs_find_stuck() -> list[int]:
    """Jobs whose worker died mid-submission: `submitting` for longer than any sbatch takes."""
    cutoff = timezone.now() - timedelta(seconds=settings.AXLE_SUBMIT_STUCK_SECONDS)
    stuck = []
    for job in Job.objects.filter(status=S.SUBMITTING, updated_at__lt=cutoff):
        try:
            transition(
                obj=job,
                to=S.UNKNOWN,
                transitions=Job.TRANSITIONS,
                action="job.submit_interrupted",
                fields={"unknown_since": job.updated_at},
                data={"reason": "the worker stopped while submitting"},
            )
            stuck.append(job.pk)
        except Conflict:
            continue
    return stuck


# ---------------------------------------------------------------- tracking


def _array_head(infos: list[JobInfo]) -> str:
    first = infos[0]
    return first.array_job_id or first.job_id


def _combined_state(infos: list[JobInfo]) -> str | None:
    states = [hub_state(i.state) for i in infos]
    states = [s for s in states if s]
    if not states:
        return None
    if S.RUNNING in states:
        return S.RUNNING
    if S.PENDING in states:
        return S.PENDING
    return next(s for s in OUTCOME_ORDER if s in states)


def _info_dict(info: JobInfo) -> dict:
    data = {k: v for k, v in asdict(info).items() if v not in (None, "")}
    for key in ("submit_time", "start_time", "end_time"):
        if key in data:
            data[key] = data[key].isoformat()
    return data


def _task_key(info: JobInfo) -> str | None:
    task = info.array_task_id
    # A pending array that Slurm has not split yet comes as one row with a range.
    return task if task is not None and task.isdigit() else None


def _apply_infos(job: Job, infos: list[JobInfo], *, final: bool = False) -> Job:
    """Record what Slurm says about one job (all rows of an array) with one CAS transition."""
    state = _combined_state(infos)
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
                "tasks": len([i for i in infos if _task_key(i)]),
                "elapsed_seconds": max((i.elapsed_seconds or 0) for i in infos),
                "node_list": ",".join(sorted({i.node_list for i in infos if i.node_list})),
            }
        )
        fields["exit_code"] = max((i.exit_code for i in infos if i.exit_code is not None), default=None)
        ends = [i.end_time for i in infos if i.end_time]
        fields["finished_at"] = max(ends) if ends else timezone.now()
    moves = bool(state and state != job.status and state in Job.TRANSITIONS.get(job.status, ()))
    if not job.is_array and not moves and all(getattr(job, k) == v for k, v in fields.items()):
        return job  # nothing new: no transaction, no write
    with transaction.atomic():
        if job.is_array:
            for info in infos:
                key = _task_key(info)
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
        if moves:
            try:
                transition(
                    obj=job,
                    to=state,
                    transitions=Job.TRANSITIONS,
                    action=f"job.{state}",
                    fields=fields,
                    data={"slurm_state": head.state, "exit_code": fields.get("exit_code")},
                )
            except Conflict:
                pass  # the user cancelled or another poll won; the next cycle sees the new state
            else:
                if state in Job.TERMINAL:
                    enqueue("apps.jobs.tasks.job_finalize", job.pk)
        else:
            # A cycle sees most jobs unchanged: write only what Slurm says differently.
            changed = {k: v for k, v in fields.items() if getattr(job, k) != v}
            if changed:
                Job.objects.filter(pk=job.pk, status=job.status).update(**changed, updated_at=timezone.now())
    return job


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
        .select_related("grant__cluster")
        .order_by("grant_id")
    )
    groups: dict[int, list[Job]] = {}
    for job in active:
        groups.setdefault(job.grant_id, []).append(job)
    stats.clusters = len({jobs[0].cluster_id for jobs in groups.values()})
    for jobs in groups.values():
        stats.groups += 1
        stats.jobs += len(jobs)
        try:
            stats.slurm_calls += _poll_group(jobs)
        except SlurmError as exc:
            stats.errors += 1
            log.warning("tracking %s on %s failed: %s", jobs[0].cluster_username, jobs[0].cluster.name, exc.message)
    return stats


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
        finished = [jid for jid in by_id if jid not in seen or _combined_state(seen[jid]) in Job.TERMINAL]
        accounting: dict[str, list[JobInfo]] = {}
        if finished:
            for info in client.accounting(finished):
                accounting.setdefault(info.array_job_id or info.job_id, []).append(info)
            calls += 1
    # Results are written after the connection is closed, one short transaction per job.
    for jid, job in by_id.items():
        if jid in accounting and _complete_record(job, accounting[jid]):
            _apply_infos(job, accounting[jid], final=True)
        elif jid in seen:
            _apply_infos(job, seen[jid])
    return calls


def _complete_record(job: Job, infos: list[JobInfo]) -> bool:
    """Accounting tells the end only once every row (every array task) has ended; slurmdbd
    can lag behind the controller by a cycle."""
    if _combined_state(infos) not in Job.TERMINAL:
        return False
    expected = job.effective_request.get("array_task_count") if job.is_array else None
    if expected is None:
        return True
    # Tasks cancelled before they started stay one row with a range ("[1-9]"), ended too.
    ranges = [i for i in infos if i.array_task_id and not _task_key(i)]
    return bool(ranges) or len([i for i in infos if _task_key(i)]) >= expected


# ---------------------------------------------------------------- cancel


def job_cancel(*, user, job: Job) -> Job:
    if job.owner_id != user.pk:
        raise PermissionDenied("Only the job's owner can cancel it.")
    if job.is_terminal:
        raise Conflict(f"The job already ended ({job.get_status_display().lower()}).")
    if job.status == S.QUEUED:
        return transition(
            obj=job,
            to=S.CANCELLED,
            transitions=Job.TRANSITIONS,
            action="job.cancelled",
            actor=user,
            fields={"finished_at": timezone.now()},
            data={"where": "hub queue"},
        )
    if not job.slurm_job_id:
        raise Conflict("The job is being handed to Slurm right now; cancel it again in a few seconds.")
    with transaction.atomic():
        audit_record(action="job.cancel_requested", subject=job, actor=user, after={"slurm_job_id": job.slurm_job_id})
    try:
        with slurm_client(job.grant) as client:
            client.cancel(job.slurm_job_id)
            infos = client.queue(job.cluster_username)
    except SlurmRejected as exc:
        raise Conflict(f"Slurm refused to cancel job {job.slurm_job_id}: {exc.message}") from None
    except SlurmError as exc:
        raise Unavailable(f"Cluster {job.cluster.name} could not be reached to cancel the job: {exc.message}") from None
    mine = [i for i in infos if (i.array_job_id or i.job_id) == job.slurm_job_id]
    if mine:
        _apply_infos(job, mine)
    job.refresh_from_db()
    return job


# ---------------------------------------------------------------- logs

LOG_CHUNK = 256 * 1024


def job_log_path(job: Job, stream: str, task: str | None = None) -> str:
    template = job.stdout_path if stream == "stdout" else job.stderr_path
    head = job.slurm_job_id
    if job.is_array:
        if task is None:
            first = job.tasks.order_by("task_id").first()
            task = first.task_id if first else "0"
        return template.replace("%A", head).replace("%a", str(task))
    return template.replace("%j", head)


@dataclass
class LogChunk:
    text: str
    next_offset: int
    missing: bool = False
    message: str = ""


def job_log_read(
    *, job: Job, stream: str, offset: int = 0, task: str | None = None, limit: int = LOG_CHUNK
) -> LogChunk:
    """Read the log from ``offset`` on; only what is new crosses the wire."""
    from apps.integrations.slurm.base import RemoteFileMissing, UnsupportedOperation

    if stream not in ("stdout", "stderr"):
        raise ValidationFailed("stream must be stdout or stderr.")
    if offset < 0:
        raise ValidationFailed("offset must be 0 or more.")
    # The index goes into the log file's name: a path fragment there would read another file.
    if task is not None and not re.fullmatch(r"[0-9]{1,10}", str(task)):
        raise ValidationFailed("task is an array task index, a whole number.")
    if not job.slurm_job_id:
        return LogChunk("", offset, missing=True, message="The job has not reached Slurm yet.")
    path = job_log_path(job, stream, task)
    try:
        with slurm_client(job.grant) as client:
            data, next_offset = client.read_file(path, offset, limit)
    except RemoteFileMissing:
        return LogChunk("", offset, missing=True, message="No log yet: Slurm creates it when the job starts.")
    except UnsupportedOperation as exc:
        raise Unavailable(exc.message) from None
    except SlurmError as exc:
        raise Unavailable(f"Cluster {job.cluster.name} could not be reached for the log: {exc.message}") from None
    cut = _incomplete_utf8_tail(data)
    if cut:
        # A chunk may end inside a multi-byte character: leave those bytes for next time.
        data, next_offset = data[:-cut], next_offset - cut
    return LogChunk(data.decode("utf-8", errors="replace"), next_offset)


def _incomplete_utf8_tail(data: bytes) -> int:
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0b1100_0000 == 0b1000_0000:
            continue  # a continuation byte: look further back for the lead byte
        if byte & 0b1000_0000 == 0:
            return 0
        need = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4 if byte >> 3 == 0b11110 else 1
        return back if back < need else 0
    return 0


# ---------------------------------------------------------------- tracking sync


def job_sync_tracking(*, job_id: int) -> int:
    """While a file-mode job runs, import what it appended to its file store since last time."""
    job = Job.objects.select_related("grant__cluster", "owner", "team").filter(pk=job_id).first()
    if job is None or job.tracking_mode != Cluster.TrackingMode.FILE or not job.mlflow_run_id:
        return 0
    with slurm_client(job.grant) as client:
        files = ssh_for_files(client)
        if files is None:
            return 0
        count, state = tracking.import_file_store(job, files)
    Job.objects.filter(pk=job.pk).update(import_state=state)
    return count


def job_finalize(*, job_id: int) -> Job | None:
    """Once a job ended: pull the rest of a file store, mirror the state and Slurm's
    accounting onto the run, snapshot its final metrics, register its model if asked.
    Safe to repeat; retried by the periodic tick while MLflow is unreachable."""
    job = Job.objects.select_related("grant__cluster", "owner", "team").filter(pk=job_id).first()
    if job is None or not job.is_terminal or job.finalized_at:
        return job
    metrics: dict = {}
    state = job.import_state
    if job.mlflow_run_id:
        try:
            if job.tracking_mode == Cluster.TrackingMode.FILE:
                with slurm_client(job.grant) as client:
                    files = ssh_for_files(client)
                    if files is not None:
                        _, state = tracking.import_file_store(job, files, final=True)
                        tracking.import_spooled_models(job, files)
            tracking.finish_run(job)
            metrics = tracking.final_metrics(job)
        except (MlflowUnavailable, SlurmError) as exc:
            Job.objects.filter(pk=job.pk).update(last_error=f"Tracking data not synced yet: {exc}")
            return job
        except MlflowError as exc:
            # MLflow refused for good (the run was deleted, say): record it and stop retrying.
            Job.objects.filter(pk=job.pk).update(last_error=f"Tracking data could not be synced: {exc}")
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, finalized_at__isnull=True).update(
            metrics=metrics, import_state=state or {}, finalized_at=timezone.now(), last_error=""
        )
        if updated:
            audit_record(action="job.tracking_synced", subject=job, after={"metrics": metrics})
    job.refresh_from_db()
    if updated and job.register_model_as and job.status == S.COMPLETED:
        enqueue("apps.registry.tasks.model_version_register_from_job", job.pk)
    return job


def job_metric_history(*, job: Job) -> dict[str, list[dict]]:
    """Every metric's points per step, from the hub's MLflow run (live while the job runs)."""
    if not job.mlflow_run_id:
        return {}
    try:
        history = tracking.metric_history(job)
    except MlflowUnavailable as exc:
        raise Unavailable(f"MLflow could not be reached: {exc}") from None
    except MlflowError as exc:
        raise Unavailable(f"MLflow could not give the job's metrics: {exc}") from None
    return {
        # NaN and infinity are valid metric values but not JSON: they travel as null.
        key: [
            {"step": p.step, "value": p.value if math.isfinite(p.value) else None, "timestamp": p.timestamp_ms}
            for p in points
        ]
        for key, points in history.items()
    }


def job_artifacts(*, job: Job, path: str = "") -> list:
    if not job.mlflow_run_id:
        return []
    try:
        return tracking.client().list_artifacts(job.mlflow_run_id, path)
    except MlflowUnavailable as exc:
        raise Unavailable(f"MLflow could not be reached: {exc}") from None
    except MlflowError as exc:
        raise ValidationFailed(f"MLflow could not list the artifacts: {exc}") from None


def job_artifact_file(*, job: Job, path: str) -> tuple[str, str]:
    """Download one artifact from the hub's MLflow to a temporary file; return (file, name)."""
    if not job.mlflow_run_id or not path or ".." in PurePosixPath(path).parts:
        raise ValidationFailed("No such artifact.")
    target = tempfile.mkdtemp(prefix="axle-artifact-")
    try:
        local = tracking.client().download_artifact(job.mlflow_run_id, path, target)
        if Path(local).is_dir() or Path(local).parent != Path(target):
            raise ValidationFailed("That is a folder; download the files in it one by one.")
    except BaseException as exc:
        shutil.rmtree(target, ignore_errors=True)  # the caller removes it only after a success
        if isinstance(exc, MlflowUnavailable):
            raise Unavailable(f"MLflow could not be reached: {exc}") from None
        if isinstance(exc, MlflowError):
            raise ValidationFailed(f"MLflow could not give the artifact: {exc}") from None
        raise
    return local, PurePosixPath(path).name
