"""Delivering a queued job to Slurm: resolve its inputs on the cluster, prepare its MLflow
tracking (its experiment and login; its run when the hub must make it first), lay out its
folder, sbatch, and record the answer.

The rule: record the intent and commit, talk to the cluster with no transaction open, then
record the result with a compare-and-swap transition."""

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import timedelta

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Case, Min, Prefetch, Q, Value, When, prefetch_related_objects
from django.utils import timezone

from apps.clusters.models import Cluster
from apps.clusters.transport import slurm_client
from apps.core.errors import Unavailable
from apps.core.leases import work_leases
from apps.core.tasks import enqueue
from apps.core.transitions import transition, transition_many
from apps.datasets.models import DatasetVersion
from apps.datasets.selectors import dataset_env
from apps.datasets.services import dataset_version_verify
from apps.integrations.mlflow import auth as mlflow_auth
from apps.integrations.mlflow.base import MlflowError, MlflowUnavailable
from apps.integrations.slurm.base import (
    AmbiguousSubmitError,
    RemoteCommandFailed,
    SlurmClient,
    SlurmError,
    SlurmRejected,
    SubmitRequest,
    TransportError,
    UnsupportedOperation,
)
from apps.integrations.slurm.sbatch import Directive

from .. import inputs, tracking, validation
from ..models import Job

S = Job.Status
log = logging.getLogger(__name__)


def _backoff(attempts: int) -> timedelta:
    base = settings.AXLE_SUBMIT_BACKOFF_SECONDS
    return timedelta(seconds=min(base * (2 ** max(attempts - 1, 0)), settings.AXLE_SUBMIT_BACKOFF_MAX_SECONDS))


def taken_request(job: Job) -> SubmitRequest | None:
    """The request `job_submit_taken` sends for `job` when the job has no run of its own and
    nothing to prepare on the cluster (a sweep's wave: it asks nothing of MLflow before
    sbatch), made from the job alone: from `job_unsaved` before its row exists, for
    `transport.stage_one`. None for any other job."""
    if tracking.has_own_run(job) or _needs_cluster_files(job):
        return None
    return _submit_request(job, tracking.job_environment(job, "", ""))  # and no dataset: no AXLE_DATASET_*


def _submit_request(job: Job, env: dict[str, str]) -> SubmitRequest:
    return SubmitRequest(
        script=job.script,
        job_name=job.name,
        comment=job.marker,
        workdir=job.workdir,
        env={**job.parameters, **env},
        extra_args=list(job.hub_args),
        script_directives=(
            None if job.script_directives is None else tuple(Directive.from_list(d) for d in job.script_directives)
        ),
    )


class _Superseded(Exception):
    """The job left `submitting` while its inputs were being resolved."""


def _prepare(job: Job, client: SlurmClient) -> dict[str, str]:
    """Resolve the inputs, open the MLflow run and lay out the job folder, all before sbatch.
    Returns the job's environment. Records what it resolved at once (never edited later)."""
    files = client.files
    try:
        files.mkdir(job.workdir)
    except (UnsupportedOperation, RemoteCommandFailed):
        pass  # a REST-only grant, or a folder this account cannot create: sbatch then says why
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
    experiment_id, run_id = tracking.start_run(job) if tracking.has_own_run(job) else ("", "")
    # A login of its own (job_environment): not one an earlier attempt shared.
    resolved.update(mlflow_experiment_id=experiment_id, mlflow_run_id=run_id, mlflow_login="")
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


def job_lease_name(job_id: int) -> str:
    """The lease that says work on this job is in flight (apps.core.leases.work_lease)."""
    return f"job:{job_id}"


def job_submit(*, job_id: int) -> Job | None:
    """Deliver a queued job to Slurm, together with the other due queued jobs of its grant
    (a bounded batch, see `jobs_submit_batch`). Safe to run twice: only the run that moves a
    job from queued to submitting delivers it; a task finding its job taken by an earlier
    batch returns at once."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.status != S.QUEUED:
        return job
    if job.next_attempt_at and job.next_attempt_at > timezone.now():
        return job
    jobs_submit_batch(grant_id=job.grant_id, first=job.pk)
    return Job.objects.select_related("grant__cluster").get(pk=job.pk)


def _batch_size() -> int:
    return max(1, getattr(settings, "AXLE_SUBMIT_BATCH", 100))


def jobs_submit_due() -> int:
    """Every queued job whose retry time has come (a fresh job has its own task), one batch
    per grant at a time, grants taking turns (the grant
    whose oldest due job waited longest first), so a grant with thousands of jobs delays
    another by one batch at most. Returns how many jobs were taken."""
    taken = 0
    while True:
        now = timezone.now()
        grants = list(
            Job.objects.filter(status=S.QUEUED, next_attempt_at__lte=now)
            .values("grant_id")
            .annotate(oldest=Min("pk"))
            .order_by("oldest")
            .values_list("grant_id", flat=True)
        )
        if not grants:
            return taken
        round_taken = 0
        for grant_id in grants:
            round_taken += len(jobs_submit_batch(grant_id=grant_id))
        taken += round_taken
        if not round_taken:
            return taken


def jobs_submit_batch(*, grant_id: int, first: int | None = None, limit: int | None = None) -> list[int]:
    """Deliver up to `limit` (AXLE_SUBMIT_BATCH) due queued jobs of one grant, oldest first
    (`first` always among them), in one round trip to the cluster:

    1. one transaction takes them (queued -> submitting, rows locked with SKIP LOCKED so two
       workers never take the same job) with all their audit events appended at once;
    2. with no transaction open: each job's experiment and MLflow login are prepared (one
       login per experiment for the batch; no run: the job's own code makes it, see
       `_open_run`), and jobs that need the cluster's files for their inputs (a code commit,
       an image digest, datasets to verify, a file store) have them resolved, and their run
       made, one by one as before;
    3. one `submit_many`: over SSH one command writes every script and environment and runs
       sbatch for each, printing marker -> job id; over slurmrestd concurrent requests;
    4. one transaction records every answer (pending, failed with Slurm's words for the one
       job it refused, unknown when it may or may not exist, queued again when it certainly
       was not sent), again with all audit events at once.

    A worker killed between 3 and 4 leaves the jobs `submitting`; `jobs_find_stuck` moves them
    to `unknown` and reconciliation finds each by its marker: never submitted twice."""
    limit = limit or _batch_size()
    now = timezone.now()
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    # Each job's lease says "in flight" to the re-drive (services.redrive) for as long as this
    # batch works on it; a job whose lease another worker holds is left to that worker, and the
    # next queued ones are asked for instead (a few rounds at most): two workers delivering the
    # same grant's batches side by side each fill theirs, instead of the later one keeping only
    # its `first` and leaving the rest queued until the re-drive. The caller's task already
    # holds `first`'s.
    held = [] if first is None else [first]
    tried = set(held)
    with ExitStack() as leases:
        for _ in range(_LEASE_ROUNDS):
            want = limit - len(held)
            if want <= 0:
                break
            queued = Job.objects.filter(grant_id=grant_id, status=S.QUEUED).filter(due).exclude(pk__in=tried)
            if first is not None:
                # The task's own job and those made after it first (the jobs its request made,
                # which have no task of their own), then older ones: two tasks of one grant
                # running side by side take disjoint ranges instead of the same oldest jobs.
                queued = queued.annotate(_older=Case(When(pk__lt=first, then=Value(1)), default=Value(0)))
                order = ("_older", "pk")
            else:
                order = ("pk",)
            candidates = list(queued.order_by(*order).values_list("pk", flat=True)[:want])
            if not candidates:
                break
            tried.update(candidates)
            taken = leases.enter_context(work_leases([job_lease_name(pk) for pk in candidates]))
            held += [pk for pk in candidates if job_lease_name(pk) in taken]
            if len(taken) == len(candidates):
                break
        return _submit_leased(grant_id=grant_id, candidates=sorted(held))


#: Rounds of "the next queued jobs" a batch asks for when other workers hold some it found.
_LEASE_ROUNDS = 3


def _submit_leased(*, grant_id: int, candidates: list[int]) -> list[int]:
    with transaction.atomic():
        rows = list(
            Job.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("grant__cluster", "cluster", "owner", "team")
            .filter(pk__in=candidates, status=S.QUEUED)
            .order_by("pk")
        )
        jobs = transition_many(
            model=Job,
            changes=[(job, {"attempts": job.attempts + 1}, None) for job in rows],
            to=S.SUBMITTING,
            transitions=Job.TRANSITIONS,
            action="job.submitting",
        )
    if not jobs:
        return []
    _deliver_taken(jobs, _Outcome())
    return [job.pk for job in jobs]


def job_submit_taken(*, job: Job) -> Job:
    """Deliver one job that its caller created already `submitting` and whose lease it holds
    (`job_create(taken=True)`: a sweep's first wave, made in its POST's transaction): steps 2
    to 4 of `jobs_submit_batch`, without its take (no second transaction, no re-read). The job
    comes with its grant, cluster, owner and team loaded; it was checked against the grant in
    that same transaction, so it is not checked again, and it has no dataset versions.

    A process killed after its sbatch leaves the job `submitting` with its lease released
    (the connection's advisory lock dies with it): the stuck-submission check (the re-drive
    after AXLE_REDRIVE_SETTLE_SECONDS, `jobs_find_stuck` after AXLE_SUBMIT_STUCK_SECONDS, both
    only with the lease free) moves it to `unknown`, and reconciliation finds the array by
    its marker: never a second sbatch. Returns the job as recorded (its status, and
    slurm_job_id or failure_message)."""
    _deliver_taken([job], _Outcome(actor=job.owner), checked=True, versions={job.pk: []})
    return job


def _deliver_taken(
    jobs: list[Job], outcome: "_Outcome", *, checked: bool = False, versions: dict[int, list] | None = None
) -> None:
    """Steps 2 to 4 of `jobs_submit_batch` for jobs this process moved to `submitting`."""
    grant = jobs[0].grant
    ready: list[Job] = []
    # A login an earlier attempt recorded: released below if this attempt leaves it.
    outcome.logins.update(job.mlflow_login for job in jobs if job.mlflow_login)
    for job in jobs:
        job.grant = grant
        # The job keeps the request checked at creation; the grant may have been narrowed,
        # revoked or have expired since, and what Slurm gets must fit the grant of now.
        if not checked and (problems := validation.grant_problems_at_submission(job=job, grant=grant)):
            message = "The job no longer fits your grant, so it was not submitted: " + "; ".join(problems)
            outcome.fail(job, "job.grant_refused", message, {"problems": problems})
        else:
            ready.append(job)
    try:
        if ready:
            try:
                with slurm_client(grant) as client:
                    _prepare_and_deliver(ready, client, outcome, versions=versions)
            except (Unavailable, TransportError, SlurmError) as exc:
                for job in ready:
                    if not outcome.decided(job):
                        outcome.error(job, exc)
        outcome.record()
    finally:
        # Whatever happened: a login no job holds (the database says which may still run)
        # is deleted.
        _release_logins(outcome.logins)


def _release_logins(names: set[str]) -> None:
    """The shared logins this batch made or left that no job may use any more (every job
    holding one was queued again or failed before sbatch): deleted. Best effort: a login
    left behind can edit its team's experiment only and was never given to a job."""
    for name in sorted(names):
        try:
            tracking.release_login(name)
        except Exception as exc:  # noqa: BLE001 - best effort, and never hides the batch's own error
            log.warning("MLflow login %s could not be deleted: %s", name, exc)


def _make_folders(client: SlurmClient, jobs: list[Job]) -> None:
    """The job folders, with one command, for a transport whose batch does not make them
    itself (slurmrestd, whose files are reached over SSH). Best effort, as for one job: a
    folder that cannot be made, sbatch then says why."""
    if not jobs or getattr(client, "submit_makes_folders", False):
        return
    try:
        client.files.run(["mkdir", "-p", "--", *sorted({job.workdir for job in jobs})])
    except (UnsupportedOperation, RemoteCommandFailed, TransportError):
        pass


def _deliver(client: SlurmClient, requests: list[SubmitRequest]) -> dict[str, str | SlurmError]:
    many = getattr(client, "submit_many", None)
    if many is not None:
        return many(requests)
    answers: dict[str, str | SlurmError] = {}
    for req in requests:  # a client without batches (a test double): one call each
        try:
            answers[req.comment] = client.submit(req)
        except SlurmError as exc:
            answers[req.comment] = exc
    return answers


def _needs_cluster_files(job: Job) -> bool:
    return bool(
        (job.code_repo and not job.code_commit)
        or job.image_path
        or job.verify_datasets
        or job.tracking_mode == Cluster.TrackingMode.FILE
    )


_MLFLOW_THREADS = 8
# A batch's simple jobs go to sbatch in chunks of this many, in order, as soon as the
# environments of a chunk are ready: while one chunk is in sbatch (the worker waits on the
# cluster), the threads prepare the next ones (a job alone in its experiment gets a login of
# its own, one MLflow call), so MLflow and Slurm work at the same time.
_PIPELINE_CHUNK = 25


def _open_run(job: Job, login=tracking.OWN_LOGIN) -> tuple[str, str, dict[str, str]]:
    """The job's experiment and environment, with `login` (the batch's shared one) or a login
    of its own; runs in a worker thread, touching no database (the job comes with its owner,
    team and cluster loaded). No run is made here: the job's own `mlflow.start_run()` makes
    it, the hub finds it later (`tracking.adopt_run`) or makes it at the end if the job made
    none (`tracking.finish_run`), so the path to Slurm costs MLflow no call per job (MLflow
    makes fewer runs a second than Slurm takes jobs: bench/README.md). A run an earlier
    attempt had (prepared one by one) is kept. A sweep's wave has no run of its own: nothing
    is asked of MLflow (its trials' runs and its login come after sbatch)."""
    if not tracking.has_own_run(job):
        return "", "", tracking.job_environment(job, "", "")
    if isinstance(login, Exception):
        raise login
    experiment_id = job.mlflow_experiment_id or tracking.hub_experiment_id(job)
    run_id = job.mlflow_run_id
    job.mlflow_experiment_id = experiment_id
    env = tracking.job_environment(job, experiment_id, run_id, login=login)
    job.mlflow_login = login.username if isinstance(login, mlflow_auth.Credential) else ""
    if job.mlflow_login and job.attempts > 1:
        # An earlier attempt may have made the job a login of its own (prepared one by one):
        # finish_run deletes only the shared one now.
        mlflow_auth.user_delete(tracking.client(), tracking.mlflow_username(job))
    return experiment_id, run_id, env


def _in_thread(func, *args):
    try:
        return func(*args)
    finally:
        connections.close_all()  # this thread's, should anything have opened one


def _prepare_and_deliver(
    jobs: list[Job], client: SlurmClient, outcome: "_Outcome", *, versions: dict[int, list] | None = None
) -> None:
    """Prepare each job's tracking (`_open_run`), lay out its folder, sbatch it, and put every
    answer in `outcome`. Jobs that need the cluster's files for their inputs are prepared one
    by one (`_prepare`, which makes their run) and go with the first chunk; the others are
    pipelined: their environments are made by a few threads (each on its own kept-alive
    session) and each chunk of `_PIPELINE_CHUNK` jobs goes to sbatch as soon as its
    environments are ready, while the threads go on with the next chunks. A transport
    failure in a chunk raises: the jobs not answered yet get its error (the caller), the
    chunks answered before keep their answers."""
    if versions is None:
        # The jobs' dataset versions in one query for the batch, not one per job.
        prefetch_related_objects(
            jobs, Prefetch("dataset_versions", queryset=DatasetVersion.objects.select_related("dataset"))
        )
        versions = {job.pk: list(job.dataset_versions.all()) for job in jobs}
    simple = [job for job in jobs if not _needs_cluster_files(job)]
    first: list[tuple[Job, dict[str, str]]] = []
    for job in jobs:
        if _needs_cluster_files(job):
            try:
                first.append((job, _prepare(job, client)))
            except _Superseded:
                outcome.superseded(job)
            except (inputs.InputError, MlflowError, Unavailable) as exc:
                outcome.error(job, exc)
    if not simple:
        _deliver_chunk(client, first, outcome)
        return
    _make_folders(client, simple)
    # One experiment for many jobs (a user's or a team's): found once per batch, not per job,
    # and checked (`experiments.experiment_ensure`: one deleted in MLflow is restored or
    # replaced), a retried job's too: the job makes its run there on the node. A job that
    # already has a run (an earlier attempt prepared it) stays where its run is.
    experiments: dict[str, str | Exception] = {}
    for job in simple:
        if job.mlflow_run_id or not tracking.has_own_run(job):
            continue
        key = tracking.experiment_key(job)
        if key not in experiments:
            experiments[key] = _call(tracking.hub_experiment_id, job)
        # Not found or checked: `_open_run` asks again and the job gets MLflow's error.
        job.mlflow_experiment_id = "" if isinstance(experiments[key], Exception) else experiments[key]
    logins = _shared_logins(simple, outcome)
    if len(simple) == 1:
        job = simple[0]
        opened = _call(_open_run, job, logins.get(job.mlflow_experiment_id, tracking.OWN_LOGIN))
        _deliver_chunk(client, first + _ready_envs([job], {job.pk: opened}, versions, outcome), outcome)
        return
    threads = min(_MLFLOW_THREADS, len(simple))
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mlflow-run")
    try:
        futures = {
            job.pk: pool.submit(
                _in_thread, _call, _open_run, job, logins.get(job.mlflow_experiment_id, tracking.OWN_LOGIN)
            )
            for job in simple
        }
        for start in range(0, len(simple), _PIPELINE_CHUNK):
            chunk = simple[start : start + _PIPELINE_CHUNK]
            opened = {job.pk: futures[job.pk].result() for job in chunk}
            _deliver_chunk(client, first + _ready_envs(chunk, opened, versions, outcome), outcome)
            first = []
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _shared_logins(jobs: list[Job], outcome: "_Outcome") -> dict:
    """One MLflow login per experiment that two or more of the batch's jobs log to
    (`tracking.shared_login`: one user and one password hash for them, not one each); a job
    alone in its experiment gets its own. Experiment id -> login (None: the server has no
    login to hand out; an exception: it could not be made, the jobs get it)."""
    counts: dict[str, int] = {}
    for job in jobs:
        if job.mlflow_experiment_id:
            counts[job.mlflow_experiment_id] = counts.get(job.mlflow_experiment_id, 0) + 1
    logins = {}
    for experiment_id in sorted(e for e, n in counts.items() if n > 1):
        # The login an earlier batch of the grant made, while its jobs hold it (they are
        # recorded as holding it now): no new user and password hash on MLflow.
        holders = [job.pk for job in jobs if job.mlflow_experiment_id == experiment_id]
        if (login := tracking.reuse_login(jobs[0].grant_id, experiment_id, holders)) is not None:
            outcome.logins.add(login.username)
            logins[experiment_id] = login
            continue
        # Named (and so released at the end) before MLflow is asked: a user made whose grant
        # then failed is deleted too.
        name = tracking.shared_login_name()
        outcome.logins.add(name)
        logins[experiment_id] = _call(tracking.shared_login, experiment_id, name)
        if isinstance(logins[experiment_id], mlflow_auth.Credential):
            # Every job of the batch that will use it holds it from now on, not chunk by chunk:
            # the first chunk's jobs ending cannot have it deleted under the later chunks.
            Job.objects.filter(pk__in=holders, status=S.SUBMITTING).update(mlflow_login=name)
            tracking.remember_login(jobs[0].grant_id, experiment_id, logins[experiment_id])
    return logins


def _ready_envs(
    chunk: list[Job], opened: dict, versions: dict[int, list], outcome: "_Outcome"
) -> list[tuple[Job, dict[str, str]]]:
    """The jobs of `chunk` whose environment is ready and that are still this batch's, with
    their environment; their experiment and login recorded (one transaction) before sbatch.
    The others' outcome goes in `outcome`."""
    good = {}
    for job in chunk:
        result = opened[job.pk]
        if isinstance(result, Exception):
            outcome.error(job, result)
        else:
            good[job.pk] = result
    if not good:
        return []
    if any(tracking.has_own_run(job) for job in chunk if job.pk in good):
        kept = _still_submitting(chunk, good, outcome)
    else:
        # Only sweep waves: nothing was asked of MLflow since they were taken (seconds at
        # most, far within AXLE_SUBMIT_STUCK_SECONDS) and there is nothing to record.
        kept = [job for job in chunk if job.pk in good]
    ready = []
    for job in kept:
        env = {**good[job.pk][2], **dataset_env(versions[job.pk])}
        if job.code_repo:
            env.update(AXLE_CODE_REPO=job.code_repo, AXLE_CODE_COMMIT=job.code_commit)
        if job.image_path:
            env["AXLE_IMAGE"] = job.image_path
        ready.append((job, env))
    return ready


def _still_submitting(chunk: list[Job], good: dict, outcome: "_Outcome") -> list[Job]:
    """The jobs of `good` still this batch's, their experiment, run id and login recorded
    (one transaction)."""
    # Preparing may outlast AXLE_SUBMIT_STUCK_SECONDS: a job taken for stuck meanwhile is
    # another worker's now, and a sbatch from here would make a second job.
    with transaction.atomic():
        mine = set(
            Job.objects.select_for_update().filter(pk__in=list(good), status=S.SUBMITTING).values_list("pk", flat=True)
        )
        now = timezone.now()
        kept = []
        for job in chunk:
            if job.pk not in good:
                continue
            if job.pk not in mine:
                outcome.superseded(job)
                continue
            job.updated_at = now
            kept.append(job)
        # The chunk's jobs share their experiment and login (one per experiment and batch): one
        # UPDATE per distinct set of values, not a CASE per job and field (bulk_update).
        same: dict[tuple[str, str, str], list[int]] = {}
        for job in kept:
            same.setdefault((job.mlflow_experiment_id, job.mlflow_run_id, job.mlflow_login), []).append(job.pk)
        for (experiment_id, run_id, login), pks in same.items():
            Job.objects.filter(pk__in=pks).update(
                mlflow_experiment_id=experiment_id, mlflow_run_id=run_id, mlflow_login=login, updated_at=now
            )
    return kept


def _deliver_chunk(client: SlurmClient, ready: list[tuple[Job, dict[str, str]]], outcome: "_Outcome") -> None:
    if not ready:
        return
    answers = _deliver(client, [_submit_request(job, env) for job, env in ready])
    for job, _ in ready:
        outcome.answer(job, answers.get(job.marker))


def _call(func, *args):
    try:
        return func(*args)
    except (MlflowError, Unavailable) as exc:
        return exc


class _Outcome:
    """What became of each job of a batch, recorded at the end in one transaction: one bulk
    transition per kind of outcome, all their audit events appended together."""

    def __init__(self, *, actor=None) -> None:
        #: Whom the events are recorded for (None: the current request's or task's actor).
        self.actor = actor
        self.groups: dict[tuple[str, str], list[tuple[Job, dict, dict | None]]] = {}
        self.ambiguous: list[Job] = []
        self._decided: set[int] = set()
        #: Shared MLflow logins the batch made or its jobs held (`_release_logins`).
        self.logins: set[str] = set()

    def decided(self, job: Job) -> bool:
        return job.pk in self._decided

    def _add(self, job: Job, to: str, action: str, fields: dict, data: dict | None) -> None:
        self._decided.add(job.pk)
        self.groups.setdefault((to, action), []).append((job, fields, data))

    def superseded(self, job: Job) -> None:
        self._decided.add(job.pk)

    def fail(self, job: Job, action: str, message: str, data: dict) -> None:
        fields = {"failure_message": message, "finished_at": timezone.now(), "mlflow_login": ""}
        self._add(job, S.FAILED, action, fields, data)

    def requeue(self, job: Job, error: str, what: str = "") -> None:
        retry_at = timezone.now() + _backoff(job.attempts)
        what = what or f"Cluster {job.cluster.name}"
        message = f"{what} could not be reached ({error}); trying again at {retry_at:%H:%M:%S} UTC."
        # Not sent: the login its environment named (if shared) is not its any more.
        fields = {"next_attempt_at": retry_at, "last_error": message, "mlflow_login": ""}
        self._add(job, S.QUEUED, "job.submit_delayed", fields, {"error": error})

    def error(self, job: Job, exc: Exception) -> None:
        if isinstance(exc, inputs.InputError):
            self.fail(job, "job.inputs_refused", str(exc), {"error": str(exc)})
        elif isinstance(exc, MlflowUnavailable | Unavailable):
            self.requeue(job, str(exc), what="MLflow or the cluster")
        elif isinstance(exc, MlflowError):
            message = f"MLflow refused the job's run: {exc}"
            self.fail(job, "job.tracking_refused", message, {"error": str(exc)})
        elif isinstance(exc, SlurmRejected):
            fields = {
                "failure_message": exc.message,
                "finished_at": timezone.now(),
                "last_error": "",
                "mlflow_login": "",
            }
            self._add(job, S.FAILED, "job.rejected", fields, {"slurm_message": exc.message})
        elif isinstance(exc, AmbiguousSubmitError):
            fields = {"unknown_since": timezone.now(), "last_error": exc.message}
            self._add(job, S.UNKNOWN, "job.submit_ambiguous", fields, {"error": exc.message})
            self.ambiguous.append(job)
        elif isinstance(exc, TransportError) and exc.permanent:
            self.fail(job, "job.submit_failed", exc.message, {"error": exc.message})
        elif isinstance(exc, SlurmError):
            self.requeue(job, exc.message)
        else:
            raise exc

    def answer(self, job: Job, answer: str | SlurmError | None) -> None:
        if answer is None:
            answer = AmbiguousSubmitError("The cluster gave no answer for this job; it may or may not exist.")
        if isinstance(answer, SlurmError):
            self.error(job, answer)
            return
        fields = {"slurm_job_id": answer, "submitted_at": timezone.now(), "last_error": "", "next_attempt_at": None}
        self._add(job, S.PENDING, "job.submitted", fields, {"slurm_job_id": answer})

    def record(self) -> None:
        with transaction.atomic():
            for (to, action), changes in self.groups.items():
                transition_many(
                    model=Job, changes=changes, to=to, transitions=Job.TRANSITIONS, action=action, actor=self.actor
                )
            if self.ambiguous:
                enqueue("apps.jobs.tasks.jobs_reconcile")


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
