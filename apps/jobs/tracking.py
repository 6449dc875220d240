"""A job's MLflow run: made by the job's own code (its `mlflow.start_run()`) and found by
the hub (`adopt_run`), or made by the hub at submission (a file store, a job prepared one
by one) or at the end (a job that made none); mirrored at the end, and (for clusters whose
compute nodes cannot reach the hub) fed from a file store in the job folder.

Only called from services and tasks, never inside a database transaction."""

import json
import logging
import math
import posixpath
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from django.conf import settings
from django.db import transaction
from django.utils.crypto import salted_hmac

from apps.clusters.models import Cluster
from apps.core.leases import work_lease
from apps.integrations.mlflow import auth as mlflow_auth
from apps.integrations.mlflow import filestore
from apps.integrations.mlflow.base import MetricPoint, MlflowError, MlflowUnavailable, RunStatus
from apps.integrations.mlflow.client import TrackingClient
from apps.integrations.slurm.base import ClusterFiles, RemoteFileMissing

from . import experiments
from .models import HubExperiment, Job

log = logging.getLogger(__name__)

T = TypeVar("T")

# How a finished job's state reads in MLflow.
RUN_STATUS = {
    Job.Status.COMPLETED: "FINISHED",
    Job.Status.CANCELLED: "KILLED",
}


_clients = threading.local()


#: How long the job page's live poll waits for MLflow (`latest_metrics`): the poll holds one
#: of the portal's few threads while it waits, every 5 s for each open page, so an MLflow that
#: hangs must cost a poll seconds, not the client's 30.
LIVE_TIMEOUT = 3.0


def client(*, timeout: float = 30.0) -> TrackingClient:
    """The hub's MLflow client, one per thread, settings and timeout, kept: its HTTP session
    keeps the connection alive across the few calls a submission makes (and across
    submissions)."""
    login = settings.AXLE_MLFLOW_USERNAME
    auth = (login, settings.AXLE_MLFLOW_PASSWORD) if login else None
    key = (settings.AXLE_MLFLOW_TRACKING_URI, auth, timeout)
    cached = getattr(_clients, "cached", None)
    if cached is None or key not in cached:
        # Settings change only in tests: keep the clients of the current settings alone.
        cached = {k: v for k, v in (cached or {}).items() if k[:2] == key[:2]}
        cached[key] = TrackingClient(settings.AXLE_MLFLOW_TRACKING_URI, auth=auth, timeout=timeout)
        _clients.cached = cached
    return cached[key]


def mlflow_username(job: Job) -> str:
    return f"axle-job-{job.uuid}"


#: `job_environment`'s default: the job gets a login of its own.
OWN_LOGIN = object()


def shared_login_name() -> str:
    return f"axle-batch-{uuid.uuid4().hex}"


def shared_login(experiment_id: str, username: str) -> mlflow_auth.Credential | None:
    """One login for the jobs of a submission batch that log to `experiment_id`: EDIT on it
    and nothing else, as a job's own login. A batch is one grant's jobs, so the jobs sharing
    it run as the same cluster account of the same user, and every job of the experiment's
    team may edit its runs anyway: what a job can reach is unchanged, and MLflow hashes one
    password for the batch instead of one per job (a scrypt each, on the server). Each job
    records the name (`Job.mlflow_login`); the last of them to end deletes it
    (`release_login`)."""
    return mlflow_auth.user_with_experiment(client(), username, experiment_id)


#: How long a shared login is handed to the next batches of the grant whose batch made it (while
#: jobs still hold it): one password hash on MLflow for a stream of batches, not one a batch.
REUSE_LOGIN_SECONDS = 600
# (grant, experiment) -> (the login, when it was made). This process's memory only: the password
# is never written anywhere but into the environments of the jobs that use it.
_reusable: dict[tuple[int, str], tuple[mlflow_auth.Credential, float]] = {}
_reusable_lock = threading.Lock()


def login_lease_name(username: str) -> str:
    """Held while a login is taken over by a new batch or deleted (`reuse_login`, `release_login`):
    the two never interleave, so a login is never deleted under a batch that just took it."""
    return f"mlflow-login:{username}"


def remember_login(grant_id: int, experiment_id: str, login: mlflow_auth.Credential) -> None:
    now = time.monotonic()
    with _reusable_lock:
        # Passwords past their reuse are not kept in memory either.
        for key, (_, made) in list(_reusable.items()):
            if now - made > REUSE_LOGIN_SECONDS:
                del _reusable[key]
        _reusable[(grant_id, experiment_id)] = (login, now)


def _forget_login(username: str) -> None:
    with _reusable_lock:
        for key, (login, _) in list(_reusable.items()):
            if login.username == username:
                del _reusable[key]


def reuse_login(grant_id: int, experiment_id: str, job_ids: list[int]) -> mlflow_auth.Credential | None:
    """The shared login an earlier batch of this grant made for `experiment_id` in this process,
    if it is recent (REUSE_LOGIN_SECONDS) and a job that may still run holds it (so it was not
    deleted): the jobs `job_ids` (being submitted) are recorded as holding it too, under its
    lease, before this returns. A batch is one grant's jobs, so the jobs sharing it run as the
    same user and cluster account, as within one batch. None: make a new one."""
    with _reusable_lock:
        entry = _reusable.get((grant_id, experiment_id))
    if entry is None:
        return None
    login, made = entry
    if time.monotonic() - made > REUSE_LOGIN_SECONDS:
        _forget_login(login.username)
        return None
    with work_lease(login_lease_name(login.username)) as mine:
        if not mine:
            return None  # being released or taken over right now: make a new one
        with transaction.atomic():
            held = Job.objects.filter(mlflow_login=login.username).exclude(status__in=Job.TERMINAL).exists()
            if held:
                Job.objects.filter(pk__in=job_ids, status=Job.Status.SUBMITTING).update(mlflow_login=login.username)
    if not held:
        _forget_login(login.username)  # its last job ended: deleted, or about to be
        return None
    return login


def release_login(username: str) -> bool:
    """Delete a shared login once no job holding it may still run (each job that ends asks;
    the last one deletes it). True when it was deleted. Under the login's lease: a batch taking
    it over (`reuse_login`) has either recorded its jobs as holders before this looks, or finds
    it gone after."""
    for _ in range(40):
        with work_lease(login_lease_name(username)) as mine:
            if mine:
                if Job.objects.filter(mlflow_login=username).exclude(status__in=Job.TERMINAL).exists():
                    return False
                _forget_login(username)
                return mlflow_auth.user_delete(client(), username)
        time.sleep(0.025)  # a batch holds it for two statements while taking it over
    log.warning("MLflow login %s was busy for a second; left for its next holder to release", username)
    return False


def experiment_name(job: Job) -> str:
    return f"team-{job.team.name}" if job.team_id else f"user-{job.owner.get_username()}"


def experiment_key(job: Job) -> str:
    """Whose experiment the job logs to (`experiments.owner_key`): its team's, else its owner's."""
    return experiments.owner_key(team_id=job.team_id, user_id=job.owner_id)


def hub_experiment_id(job: Job, tracking: TrackingClient | None = None) -> str:
    """The id of the job's team's (or user's) experiment: one the hub made (`experiments`).
    Its MLflow name is then known too (`experiment_mlflow_name`), before a batch's threads,
    which touch no database, put it in each job's environment."""
    experiment_id = experiments.experiment_ensure(
        key=experiment_key(job),
        name=experiment_name(job),
        tracking=tracking or client(),
    )
    experiment_mlflow_name(experiment_id)
    return experiment_id


def mlruns_dir(job: Job) -> str:
    return posixpath.join(job.workdir, "mlruns")


def run_tags(job: Job) -> dict[str, str]:
    tags = {
        "mlflow.runName": job.name,
        "mlflow.user": job.owner.get_username(),
        "axle.job_id": str(job.uuid),
        "axle.cluster": job.cluster.name,
        "axle.cluster_username": job.cluster_username,
        "axle.script_sha256": job.script_sha256,
    }
    if job.code_repo:
        tags.update({"mlflow.source.git.repoURL": job.code_repo, "axle.code_ref": job.code_ref})
    if job.code_commit:
        tags["mlflow.source.git.commit"] = job.code_commit
    if job.image_path:
        tags.update({"axle.image": job.image_path, "axle.image_digest": job.image_digest})
    partition = (job.effective_request or {}).get("partition")
    if partition:
        tags["axle.partition"] = partition
    return tags


#: The tag that tells the run a job's code made (`run_context`) from one anybody else with
#: EDIT on the experiment made with the job's `axle.job_id`: MLflow records no creator (a
#: run's `user_id` is what the client says, its `mlflow.user` tag), so the job's environment
#: carries a value only the hub can make, and the hub adopts only a run that has it.
RUN_KEY_TAG = "axle.run_key"

#: On the run the hub made at the end for a job whose code made none in its experiment
#: (`_create_final_run`): "hub". The job page says so (`Job.mlflow_run_by_hub`), since the
#: likely cause is code that logged elsewhere (`mlflow.set_experiment` to another one).
RUN_MADE_BY_TAG = "axle.run_made_by"


def run_key(job: Job) -> str:
    """The job's `RUN_KEY_TAG` value: a MAC of its id under the hub's secret key. It opens
    nothing (it is no login): it only shows that a run came from the job's environment."""
    return salted_hmac("axle.jobs.tracking.run_key", str(job.uuid), algorithm="sha256").hexdigest()[:32]


def run_context(job: Job) -> str:
    """`MLFLOW_RUN_CONTEXT` for the job: MLflow's own variable, whose tags its client puts on
    every run it creates (after its defaults, so `mlflow.user` is the job's owner)."""
    return json.dumps({**run_tags(job), RUN_KEY_TAG: run_key(job)}, sort_keys=True)


def run_pending(job: Job) -> bool:
    """The job's run is its own code's to make and the hub has not found it yet (a job sent
    with an experiment and no run: `job_environment`). Never once the job is finalized:
    `finish_run` found or made its run then, so a finalized job without one (its tracking
    could not be synced) will not get one by asking MLflow again."""
    return job.finalized_at is None and has_own_run(job) and bool(job.mlflow_experiment_id) and not job.mlflow_run_id


def job_run_filter(job: Job) -> dict[str, str]:
    """The tags a run the job's environment made carries: its id and its key. Both go in
    MLflow's search, so runs tagged with the job's id alone (any number) hide nothing."""
    return {"axle.job_id": str(job.uuid), RUN_KEY_TAG: run_key(job)}


#: How much earlier than Slurm's start of the job a run the job made may say it started
#: (the compute node's clock against the controller's).
CLOCK_SKEW = timedelta(minutes=5)


def _started_from_ms(job: Job) -> int | None:
    """The earliest start time a run of the job may have, when Slurm's start is known: a run
    whose client says it started before (backdated, by a teammate who read the job's key off
    its run) is not the job's, even if it is the earliest."""
    if not job.started_at:
        return None
    return int((job.started_at - CLOCK_SKEW).timestamp() * 1000)


def adopt_run(job: Job, tracking: TrackingClient | None = None) -> str:
    """Find the run the job's code made and record it on the job (once: a guarded update, so
    two callers agree on one). The job's run is the earliest run of its experiment tagged with
    its id and its `run_key`, started no earlier than Slurm started the job (less
    `CLOCK_SKEW`) when that is known: a script that starts a run twice, or several ranks that
    start one each, make several, and the first is the job's. Returns the run id, "" while none.
    One MLflow search; never call it inside a transaction."""
    tracking = tracking or client()
    runs = tracking.runs_with_tags(
        job.mlflow_experiment_id, job_run_filter(job), started_from_ms=_started_from_ms(job), first_only=True
    )
    if not runs:
        return ""
    found, by_hub = runs[0].run_id, runs[0].tags.get(RUN_MADE_BY_TAG) == "hub"
    if Job.objects.filter(pk=job.pk, mlflow_run_id="").update(mlflow_run_id=found, mlflow_run_by_hub=by_hub):
        job.mlflow_run_id, job.mlflow_run_by_hub = found, by_hub
        return found
    row = Job.objects.filter(pk=job.pk).values("mlflow_run_id", "mlflow_run_by_hub").first() or {}
    job.mlflow_run_id = row.get("mlflow_run_id") or found
    job.mlflow_run_by_hub = bool(row.get("mlflow_run_by_hub"))
    return job.mlflow_run_id


#: A job page asks MLflow for the run a job's code made at most this often per job (per process).
ADOPT_EVERY = 5.0
_adopt_misses: dict[str, float] = {}  # job uuid -> monotonic time of its last search that found none
_adopt_lock = threading.Lock()


def page_adopt_run(job: Job) -> str:
    """`adopt_run` for a job page (its live poll, the API's detail and metrics): only for a
    job that has started, with the live poll's short timeout and pause after MLflow was found
    unavailable, and not again within `ADOPT_EVERY` seconds of a search that found nothing.
    MLflow's errors are the page's "no MLflow run yet": never raised."""
    if not run_pending(job) or job.status in (Job.Status.QUEUED, Job.Status.SUBMITTING, Job.Status.PENDING):
        return job.mlflow_run_id
    now = time.monotonic()
    name = str(job.uuid)
    with _adopt_lock:
        if now - _adopt_misses.get(name, -ADOPT_EVERY) < ADOPT_EVERY:
            return ""
        _adopt_misses[name] = now
        if len(_adopt_misses) > 10_000:
            for stale in [k for k, t in _adopt_misses.items() if now - t >= ADOPT_EVERY]:
                del _adopt_misses[stale]
    try:
        found = _page_call(lambda: adopt_run(job, client(timeout=LIVE_TIMEOUT)), LIVE_TIMEOUT)
    except MlflowError:
        return ""
    if found:
        with _adopt_lock:
            _adopt_misses.pop(name, None)
    return found


def start_run(job: Job) -> tuple[str, str]:
    """Create (or find again) the job's run and log its parameters; return (experiment id,
    run id)."""
    experiment_id, run_id = open_run(job)
    log_parameters(job, run_id)
    return experiment_id, run_id


def open_run(job: Job) -> tuple[str, str]:
    """Create (or find again) the job's run, with its tags in the same call; return
    (experiment id, run id). The parameters are not logged here: the batched submission
    leaves them to `finish_run` (the hub records them on the job; MLflow gets them with the
    final tags, in the same call), so a job costs MLflow one call before sbatch.

    A job on its first attempt (`attempts` is 1 once a submission took it) cannot have a run
    from an earlier attempt: the search for one is made only from the second attempt on."""
    tracking = client()
    experiment = job.mlflow_experiment_id or hub_experiment_id(job, tracking)
    run_id = job.mlflow_run_id
    if not run_id and job.attempts > 1:
        run_id = _run_of_an_earlier_attempt(tracking, experiment, job)
    run_id = run_id or tracking.create_run(experiment, job.name, run_tags(job))
    return experiment, run_id


def log_parameters(job: Job, run_id: str) -> None:
    """The job's parameters on its run (one call; logging the same values again is a no-op
    for MLflow, so a retried submission may log them twice)."""
    if job.parameters:
        client().log_params(run_id, job.parameters)


def _run_of_an_earlier_attempt(tracking: TrackingClient, experiment_id: str, job: Job) -> str:
    """The run an attempt opened before it died (before the job recorded its id): found by
    the job's id in its tags and reused, so a killed worker leaves no orphan run. Should two
    attempts have opened one each, the first is kept and the others are ended as KILLED."""
    runs = tracking.runs_tagged(experiment_id, "axle.job_id", str(job.uuid))
    live = [run_id for run_id, status in runs if status not in RunStatus.TERMINAL]
    for extra in live[1:]:
        tracking.terminate(extra, RunStatus.KILLED)
    return live[0] if live else ""


def has_own_run(job: Job) -> bool:
    """False for a sweep's wave (`Job.TRACKING_TRIALS`): its tasks log to their trials' runs."""
    return job.tracking_mode != Job.TRACKING_TRIALS


def job_environment(job: Job, experiment_id: str, run_id: str, *, login=OWN_LOGIN) -> dict[str, str]:
    """What the job's own `mlflow` client needs; nothing Axle-specific in the user's code.
    `login`: a shared login (`shared_login`) the job uses instead of one of its own. A sweep's
    wave gets only the tracking URI, at no MLflow call: each task learns its run and the job's
    login from the sweep's folder once the hub made them, after sbatch.

    Without `run_id` (a job logging over HTTP, sent in a batch) the job gets no run: its
    `mlflow.start_run()` makes one in its experiment, tagged from `MLFLOW_RUN_CONTEXT` with
    the job's id and key, and the hub finds it (`adopt_run`) or, if the job made none, makes
    it at the end (`finish_run`)."""
    if not has_own_run(job):
        uri = job.cluster.mlflow_tracking_uri or settings.AXLE_MLFLOW_TRACKING_URI
        return {"MLFLOW_TRACKING_URI": uri, "AXLE_JOB_ID": str(job.uuid)}
    env = {"MLFLOW_EXPERIMENT_ID": experiment_id, "AXLE_JOB_ID": str(job.uuid)}
    if run_id:
        env["MLFLOW_RUN_ID"] = run_id
    else:
        env["MLFLOW_RUN_CONTEXT"] = run_context(job)
        # The cluster login's own MLFLOW_RUN_ID or MLFLOW_EXPERIMENT_NAME (sbatch passes the
        # login's environment on) would send the job's run where the hub does not look: ""
        # is no run to MLflow's client (`mlflow.start_run()` makes one), and the experiment's
        # name agrees with its id (MLflow checks that they do).
        env["MLFLOW_RUN_ID"] = ""
        name = experiment_mlflow_name(experiment_id)
        if name:
            env["MLFLOW_EXPERIMENT_NAME"] = name
    if job.cluster.tracking_mode == Cluster.TrackingMode.FILE:
        env["MLFLOW_TRACKING_URI"] = filestore.tracking_uri(mlruns_dir(job))
        env.update(filestore.ALLOW_FILE_STORE_ENV)
    else:
        env["MLFLOW_TRACKING_URI"] = job.cluster.mlflow_tracking_uri or settings.AXLE_MLFLOW_TRACKING_URI
        # A login good for its team's experiment only; deleted by finish_run.
        if login is OWN_LOGIN:
            login = mlflow_auth.user_with_experiment(client(), mlflow_username(job), experiment_id)
        env.update(login.environment() if login else {})
    return env


_mlflow_names: dict[str, str] = {}  # experiment id -> its name in MLflow (a HubExperiment's never changes)


def experiment_mlflow_name(experiment_id: str) -> str:
    """The name in MLflow of the hub's experiment `experiment_id` ("" if the hub did not make
    it): one query per experiment and process (`hub_experiment_id` makes it), not one per job
    of a batch."""
    name = _mlflow_names.get(experiment_id)
    if name is None:
        rows = HubExperiment.objects.filter(experiment_id=experiment_id).values_list("mlflow_name", flat=True)
        name = rows.first() or ""
        if name:
            _mlflow_names[experiment_id] = name
    return name


def bootstrap_file_store(job: Job, experiment_id: str, run_id: str) -> dict[str, bytes]:
    return filestore.bootstrap_files(
        experiment_id,
        run_id,
        job.name,
        mlruns_dir(job),
        experiment_name=experiment_name(job),
        user_id=job.cluster_username,
    )


class _StoreReader:
    """The two callables the file-store reader needs, over the job account's `ClusterFiles`."""

    def __init__(self, files: ClusterFiles):
        self.files = files

    def read(self, path: str, offset: int) -> tuple[bytes, int]:
        return self.files.read(path, offset, 1 << 20)

    def read_whole(self, path: str) -> bytes:
        data, offset = b"", 0
        while True:
            chunk, offset = self.read(path, offset)
            if not chunk:
                return data
            data += chunk

    def list_files(self, directory: str) -> dict[str, int | None]:
        try:
            return {entry.name: entry.size for entry in self.files.list(directory)}
        except RemoteFileMissing:
            return {}  # not there (yet)


def import_file_store(job: Job, files: ClusterFiles, *, final: bool = False) -> tuple[int, dict]:
    """Pull what the job appended to its file store since the last pull and import it in
    batches. Returns (points imported, new state)."""
    remote = _StoreReader(files)
    increment = filestore.read_increment(
        run_path=filestore.run_dir(mlruns_dir(job), job.mlflow_experiment_id, job.mlflow_run_id),
        read=remote.read,
        list_files=remote.list_files,
        state=job.import_state or None,
        final=final,
    )
    if increment:
        filestore.import_into(client(), job.mlflow_run_id, increment.points, increment.params, increment.tags)
    return len(increment.points), increment.state


def import_spooled_models(job: Job, files: ClusterFiles) -> int:
    """Copy the models the job logged into its file store into the hub's run artifacts."""
    remote = _StoreReader(files)
    models = filestore.find_models(
        mlruns_dir=mlruns_dir(job),
        experiment_id=job.mlflow_experiment_id,
        run_id=job.mlflow_run_id,
        list_files=remote.list_files,
        read=remote.read,
    )
    tracking = client()
    for model in models:
        with tempfile.TemporaryDirectory(prefix="axle-spool-") as tmp:
            for relative in remote.list_files(model.artifact_dir):
                target = Path(tmp) / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(remote.read_whole(posixpath.join(model.artifact_dir, relative)))
            tracking.log_artifacts(job.mlflow_run_id, tmp, model.name if len(models) > 1 else "model")
    return len(models)


def final_metrics(job: Job) -> dict[str, float | None]:
    """The last value of each metric; NaN and infinity (not JSON) become None."""
    latest = client().get_run(job.mlflow_run_id).metrics
    return {key: (p.value if math.isfinite(p.value) else None) for key, p in sorted(latest.items())}


#: After a call of the job page (its live poll, artifacts list, charts' history) found MLflow
#: unavailable (no answer in time, refused, a 5xx), this process's page calls do not ask it
#: again for this long: they answer at once that MLflow is unavailable. Without it a hanging
#: MLflow holds a portal thread 3 s for every poll of every open page of a job with a run
#: (20 polls/s for 100 such pages) and 30 s for every artifacts list and history: the
#: portal's 12 threads all wait and nothing else is answered (bench/README.md, portal_load
#: --mlflow-hangs). The first call after it asks again; when MLflow answers, the charts'
#: version changes and they fetch the history.
LIVE_BREAKER_SECONDS = 10.0
_live_down: dict[str, float] = {}  # tracking URI -> monotonic time until which polls do not ask
_live_lock = threading.Lock()


def reset_live_breaker() -> None:
    """Forget that MLflow was found unavailable (tests: one test's outage is not the next's)."""
    with _live_lock:
        _live_down.clear()


def _page_call(call: Callable[[], T], timeout: float) -> T:
    """`call` (what a job page asks MLflow by itself: its live poll, its artifacts list, its
    charts' history; waiting `timeout` at most per request), unless MLflow was found
    unavailable less than LIVE_BREAKER_SECONDS ago in this process: then `MlflowUnavailable`
    at once. When that pause is over one call asks again (the others still answer at once
    until it has had its time): one portal thread per process waits for a hanging MLflow,
    not all of them; if MLflow answers, the pause ends."""
    uri = settings.AXLE_MLFLOW_TRACKING_URI
    with _live_lock:
        until = _live_down.get(uri)
        if until is not None:
            if time.monotonic() < until:
                raise MlflowUnavailable("MLflow did not answer a moment ago; the hub asks again in a few seconds.")
            _live_down[uri] = time.monotonic() + timeout + LIVE_BREAKER_SECONDS  # this call probes
    try:
        result = call()
    except MlflowUnavailable:
        with _live_lock:
            _live_down[uri] = time.monotonic() + LIVE_BREAKER_SECONDS
        raise
    except BaseException:
        # MLflow answered, with a refusal (a deleted run, a 403), or the call failed on the
        # hub's side: not an outage, so no pause (the probe's own extension included).
        with _live_lock:
            _live_down.pop(uri, None)
        raise
    with _live_lock:
        _live_down.pop(uri, None)  # MLflow answers: the pause, whoever set it, is over
    return result


def latest_metrics(job: Job) -> dict[str, MetricPoint]:
    """The latest point of each of the run's metrics, in one call with a short timeout (the
    job page's live poll asks it while the run can still gain points). Raises
    `MlflowUnavailable` at once, without asking, for `LIVE_BREAKER_SECONDS` after a call
    found MLflow unavailable (per process and tracking URI)."""
    return _page_call(lambda: client(timeout=LIVE_TIMEOUT).get_run(job.mlflow_run_id).metrics, LIVE_TIMEOUT)


#: How long the job page's artifacts list (asked when the page opens) waits for MLflow.
ARTIFACTS_TIMEOUT = 10.0


def list_artifacts(job: Job, path: str = "") -> list:
    """The run's artifacts below `path`, for the job page: with the live poll's pause after
    MLflow was found unavailable, and 10 s at most (it held a portal thread 30 s before)."""
    return _page_call(
        lambda: client(timeout=ARTIFACTS_TIMEOUT).list_artifacts(job.mlflow_run_id, path), ARTIFACTS_TIMEOUT
    )


#: How long the charts' history (every point of every metric: it can be long) waits for MLflow.
HISTORY_TIMEOUT = 30.0


def metric_history(job: Job, keys: list[str] | None = None) -> dict[str, list[MetricPoint]]:
    """Every point of the run's metrics (the job page's charts ask it when their version
    changes, and when the page opens): with the live poll's pause after MLflow was found
    unavailable, so a page opened meanwhile does not hold a portal thread for the timeout."""

    def call():
        tracking = client(timeout=HISTORY_TIMEOUT)
        names = sorted(tracking.get_run(job.mlflow_run_id).metrics) if keys is None else keys
        return tracking.metric_history(job.mlflow_run_id, names)

    return _page_call(call, HISTORY_TIMEOUT)


def finish_run(job: Job) -> None:
    """Delete the job's login, then mirror its end onto its run (a sweep's wave has none).
    A job whose code made no run (or none the hub found) gets one here, so every job ends
    with one run holding its parameters, final tags and status."""
    tracking = client()
    if job.mlflow_login:
        release_login(job.mlflow_login)
    else:
        mlflow_auth.user_delete(tracking, mlflow_username(job))
    if run_pending(job) and not adopt_run(job, tracking):
        _create_final_run(job, tracking)
    if not job.mlflow_run_id:
        return
    accounting = job.accounting or {}
    tags = {
        "axle.status": job.status,
        "axle.slurm_job_id": job.slurm_job_id,
        "axle.slurm_state": job.slurm_state,
        "axle.exit_code": "" if job.exit_code is None else str(job.exit_code),
        "axle.node_list": str(accounting.get("node_list", "")),
        "axle.elapsed_seconds": str(accounting.get("elapsed_seconds", "")),
        "axle.alloc_gpus": str(accounting.get("alloc_gpus", "")),
    }
    tags = {k: v for k, v in tags.items() if v}
    # The job's parameters go with the final tags, in the same call: a batched submission
    # does not log them (one MLflow call per job on the path to Slurm; `open_run`). Logging
    # them again when the submission did is a no-op for MLflow. Should the job itself have
    # logged one of these names with another value, MLflow refuses the batch: the job's own
    # value stands (the hub's is on the job, `Job.parameters`) and the tags go alone.
    params = {k: str(v) for k, v in (job.parameters or {}).items()}
    try:
        tracking.log_batch(job.mlflow_run_id, params=params, tags=tags)
    except MlflowError as exc:
        if not params or exc.code != "INVALID_PARAMETER_VALUE":
            raise
        tracking.set_tags(job.mlflow_run_id, tags)
    status = RUN_STATUS.get(job.status, "FAILED")
    tracking.terminate(job.mlflow_run_id, status)
    if job.mlflow_experiment_id and job.tracking_mode != Cluster.TrackingMode.FILE:
        _end_other_runs(job, tracking, status)


def _end_other_runs(job: Job, tracking: TrackingClient, status: str) -> None:
    """End the job's other runs (several ranks, or a script, that each started one) that
    are still open: they would stay RUNNING for ever once the job is gone. One search."""
    runs = tracking.runs_with_tags(job.mlflow_experiment_id, job_run_filter(job), started_from_ms=_started_from_ms(job))
    for run in runs:
        if run.run_id != job.mlflow_run_id and run.status not in RunStatus.TERMINAL:
            tracking.terminate(run.run_id, status)


def _create_final_run(job: Job, tracking: TrackingClient) -> None:
    """The run of a job whose code made none: with its tags, started when the job started.
    It carries the job's key too, so a finalizer killed before it recorded the run finds it
    on its retry (`adopt_run`) instead of making another."""
    start = job.started_at or job.submitted_at
    start_ms = int(start.timestamp() * 1000) if start else None
    tags = {**run_tags(job), RUN_KEY_TAG: run_key(job), RUN_MADE_BY_TAG: "hub"}
    run_id = tracking.create_run(job.mlflow_experiment_id, job.name, tags, start_time_ms=start_ms)
    if Job.objects.filter(pk=job.pk, mlflow_run_id="").update(mlflow_run_id=run_id, mlflow_run_by_hub=True):
        job.mlflow_run_id, job.mlflow_run_by_hub = run_id, True
        return
    # Another caller recorded a run meanwhile: that one stands. A page that found the job's
    # own run: this one goes. A page that found this one (it has the job's key): it stays.
    row = Job.objects.filter(pk=job.pk).values("mlflow_run_id", "mlflow_run_by_hub").first() or {}
    job.mlflow_run_id = row.get("mlflow_run_id") or ""
    job.mlflow_run_by_hub = bool(row.get("mlflow_run_by_hub"))
    if job.mlflow_run_id != run_id:
        tracking.delete_run(run_id)
