"""Reads for jobs: the user's own jobs and their timeline from the database; a job's log
from its cluster, its metrics and artifacts from the hub's MLflow. Nothing here writes."""

import functools
import math
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import QuerySet

from apps.audit.models import AuditEvent
from apps.clusters.models import Cluster
from apps.clusters.transport import slurm_client
from apps.core.errors import ApplicationError, NotFound, Unavailable, ValidationFailed
from apps.core.live import live_version
from apps.core.models import parse_uuid
from apps.integrations.mlflow.base import MlflowError, MlflowUnavailable
from apps.integrations.slurm.base import RemoteCommandFailed, RemoteFileMissing, SlurmError, UnsupportedOperation

from . import tracking
from .models import ACTIVE_EXCLUDES, Job


def job_list(*, user, status: str = "", cluster: str = "", q: str = "") -> QuerySet[Job]:
    """The user's jobs, newest first (id breaking ties: the order keyset pages rely on); every
    filter has an index in this order (see Job.Meta)."""
    qs = (
        Job.objects.filter(owner=user)
        .select_related("cluster", "rerun_of", "reproduced_from")
        .prefetch_related("dataset_versions__dataset")
        .order_by("-created_at", "-id")
    )
    if status == "active":
        qs = qs.exclude(status__in=ACTIVE_EXCLUDES)
    elif status:
        qs = qs.filter(status=status)
    if cluster:
        # The cluster's id first (one small read), so the job list reads its own index.
        cluster_id = Cluster.objects.filter(name=cluster).values_list("pk", flat=True).first()
        qs = qs.filter(cluster_id=cluster_id) if cluster_id is not None else qs.none()
    if q:
        qs = qs.filter(name__icontains=q)
    return qs


def job_get(*, user, job_id) -> Job:
    """A job of the user's own; anybody else's answers as if it did not exist.

    The jobs it was run again or reproduced from are read when there is one (a small query
    each), not joined in: every job page, log chunk and action reads this, and the ORM spent
    3 ms of CPU a call building a five-table select of two more whole jobs (bench/README.md,
    portal_load)."""
    return _own_job(
        Job.objects.select_related("cluster", "grant__cluster", "team").prefetch_related("dataset_versions__dataset"),
        user=user,
        job_id=job_id,
    )


def _own_job(jobs: QuerySet[Job], *, user, job_id) -> Job:
    """The user's own job `job_id` from `jobs`; anybody else's, or a malformed id, answers as
    if it did not exist."""
    try:
        job = jobs.filter(owner=user, uuid=job_id).first()
    except ValidationError:
        job = None
    if job is None:
        raise NotFound("No such job.")
    return job


def job_for_log(*, user, job_id) -> Job:
    """A job of the user's own, as its log tail reads it (one request every few seconds per
    open job page): the columns the read uses, with its cluster and grant, in one narrow
    statement without ordering (the job's uuid is unique). Anybody else's job answers as if it
    did not exist. The ORM compiling job_get's wide select was most of a read's portal CPU."""
    try:
        found = list(
            Job.objects.filter(owner=user, uuid=job_id)
            .select_related("cluster", "grant")
            .only(*_LOG_COLUMNS)
            .order_by()[:1]
        )
    except ValidationError:
        found = []
    if not found:
        raise NotFound("No such job.")
    job = found[0]
    if job.grant_id is not None and job.grant.cluster_id == job.cluster_id:
        job.grant.cluster = job.cluster  # the same row: not joined twice
    return job


# What a log read uses: the job's state and log paths, the grant and cluster its connection is
# made from (apps.clusters.transport), the cluster's name for messages.
_LOG_COLUMNS = (
    "uuid",
    "owner_id",
    "status",
    "slurm_job_id",
    "stdout_path",
    "stderr_path",
    "effective_request",
    "cluster",
    "grant",
    *(
        f"cluster__{name}"
        for name in (
            "name",
            "transport",
            "login_host",
            "login_port",
            "host_key",
            "slurm_bin_dir",
            "rest_url",
            "rest_api_version",
            "jwt_key_encrypted",
        )
    ),
    *(
        f"grant__{name}"
        for name in ("cluster", "cluster_username", "ssh_private_key_encrypted", "rest_token_encrypted")
    ),
)


def job_timeline(*, job: Job) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(subject_type="jobs.job", subject_id=str(job.uuid)).order_by("seq")


#: What the job page's live regions depend on (apps.jobs.views._job_state), and no more.
JOB_LIVE_FIELDS = (
    "uuid",
    "status",
    "slurm_job_id",
    "slurm_state",
    "reason",
    "estimated_start",
    "exit_code",
    "accounting",
    "failure_message",
    "last_error",
    "mlflow_run_id",
    "mlflow_experiment_id",
    "tracking_mode",
    "metrics",
    "finalized_at",
    "started_at",
)


def job_get_fields(*, user, job_id, fields: tuple[str, ...]) -> Job:
    """A job of the user's own with only ``fields`` loaded: for the answers the job page asks
    often (its chart's history, each time its curves changed), which read a few columns of one
    row and must not pay for job_get's joins. Anybody else's job answers as if it did not exist."""
    try:
        job = Job.objects.filter(owner=user, uuid=job_id).only(*fields).first()
    except ValidationError:
        job = None
    if job is None:
        raise NotFound("No such job.")
    return job


def job_live_head(*, user, job_id) -> Job:
    """What the job page's live poll compares (apps.jobs.views), in one statement: the job's
    JOB_LIVE_FIELDS and, as ``last_event_seq``, the seq of its timeline's last event (None
    without one). The audit trail is append-only (a trigger refuses UPDATE and DELETE) and
    its seq grows with every append, so the last seq alone says whether the timeline changed.
    Anybody else's job answers as if it did not exist.

    Every open job page asks this every 5 s, and the ORM spent three times the CPU building
    the statement that PostgreSQL spends answering it (1.6 ms against 0.5 ms a poll, bench/
    README.md): the statement is written once per process from the models' own names."""
    key = parse_uuid(job_id)
    if key is None:
        raise NotFound("No such job.")
    uuid_field = Job._meta.get_field("uuid")
    params = ["jobs.job", str(key), user.pk, uuid_field.get_db_prep_value(key, connection)]
    job = next(iter(Job.objects.raw(_live_head_sql(), params)), None)
    if job is None:
        raise NotFound("No such job.")
    return job


@functools.cache
def _live_head_sql() -> str:
    qn = connection.ops.quote_name
    jobs, events = Job._meta, AuditEvent._meta
    columns = ", ".join(qn(jobs.get_field(name).column) for name in ("id", *JOB_LIVE_FIELDS))
    seq, subject_type, subject_id = (qn(events.get_field(f).column) for f in ("seq", "subject_type", "subject_id"))
    last_event = (
        f"SELECT {seq} FROM {qn(events.db_table)} WHERE {subject_type} = %s AND {subject_id} = %s "
        f"ORDER BY {seq} DESC LIMIT 1"
    )
    owner, uuid = qn(jobs.get_field("owner").column), qn(jobs.get_field("uuid").column)
    return (
        f"SELECT {columns}, ({last_event}) AS last_event_seq FROM {qn(jobs.db_table)} "
        f"WHERE {owner} = %s AND {uuid} = %s"
    )


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
    """Read the log from ``offset`` on, through the grant's `ClusterFiles`; only what is new
    crosses the wire."""
    chunk = job_logs_read(job=job, offsets={stream: offset}, task=task, limit=limit)[stream]
    if isinstance(chunk, ApplicationError):
        raise chunk
    return chunk


def job_logs_read(
    *, job: Job, offsets: dict[str, int], task: str | None = None, limit: int = LOG_CHUNK
) -> dict[str, LogChunk | ApplicationError]:
    """Each stream of `offsets` (stdout, stderr) read from its offset on, all through one
    connection of the grant's: the job page's log tail asks for both in one request. A stream
    that could not be read gets the error to show in its place (`Unavailable`; its
    ``extra["retry"]`` says whether a later read may work)."""
    for stream, offset in offsets.items():
        if stream not in ("stdout", "stderr"):
            raise ValidationFailed("stream must be stdout or stderr.")
        if offset < 0:
            raise ValidationFailed("offset must be 0 or more.")
    # The index goes into the log file's name: a path fragment there would read another file.
    if task is not None and not re.fullmatch(r"[0-9]{1,10}", str(task)):
        raise ValidationFailed("task is an array task index, a whole number.")
    if not offsets:
        return {}
    if not job.slurm_job_id:
        return {
            stream: LogChunk("", offset, missing=True, message="The job has not reached Slurm yet.")
            for stream, offset in offsets.items()
        }
    chunks: dict[str, LogChunk | ApplicationError] = {}
    try:
        with slurm_client(job.grant) as client:
            for stream, offset in offsets.items():
                try:
                    chunks[stream] = _log_chunk(client.files, job_log_path(job, stream, task), offset, limit)
                except RemoteCommandFailed as exc:
                    # This file could not be read (a folder, an I/O error on the cluster): that
                    # stream's tail ends with the reason, the other streams go on. The
                    # connection is fine, so it stays in the pool.
                    chunks[stream] = Unavailable(
                        f"Cluster {job.cluster.name} could not be reached for the log: {exc.message}",
                        extra={"retry": False},
                    )
    except UnsupportedOperation as exc:
        failed: ApplicationError = Unavailable(exc.message)
    except SlurmError as exc:
        # `retry`: a later read may work (a dropped connection, an sshd refusing logins for a
        # moment); not when the grant or cluster cannot reach files at all.
        failed = Unavailable(
            f"Cluster {job.cluster.name} could not be reached for the log: {exc.message}",
            extra={"retry": not exc.permanent},
        )
    else:
        return chunks
    return {stream: chunks.get(stream, failed) for stream in offsets}


def _log_chunk(files, path: str, offset: int, limit: int) -> LogChunk:
    try:
        data, next_offset = files.read(path, offset, limit)
    except RemoteFileMissing:
        return LogChunk("", offset, missing=True, message="No log yet: Slurm creates it when the job starts.")
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


# ---------------------------------------------------------------- tracking


def job_run_find(*, job: Job) -> str:
    """The job's MLflow run id: for a running or ended job whose code makes its run, the hub
    looks for it (`tracking.page_adopt_run`: one MLflow search every few seconds at most, no
    error raised); "" while there is none."""
    return tracking.page_adopt_run(job)


def job_curves_version(*, job: Job) -> str:
    """What the job page's metric charts show, as a short version its live poll compares:
    "" without an MLflow run (no chart), "final" once the run can gain no more points, and
    while it can, a digest of the latest point of each metric (one MLflow call). The charts
    fetch the history only when this changes. A point logged at an older step than a metric's
    latest one leaves the digest alone and shows with the next change or when the job ends."""
    if not tracking.page_adopt_run(job):  # a run the job's code made, found (one call at most)
        return ""
    if job.is_terminal and job.finalized_at:
        return "final"
    if job.status not in (Job.Status.RUNNING, Job.Status.UNKNOWN) and not job.is_terminal:
        return "not-started"  # the job's own code logs the points, and it has not run yet
    try:
        latest = tracking.latest_metrics(job)
    except (MlflowError, KeyError):
        # The chart says MLflow could not be reached (its own fetch fails the same way); the
        # next poll that reaches MLflow changes the version and the chart fetches again.
        return "unavailable"
    return live_version(sorted((p.key, p.step, p.timestamp_ms, p.value) for p in latest.values()))


def job_metric_history(*, job: Job) -> dict[str, list[dict]]:
    """Every metric's points per step, from the hub's MLflow run (live while the job runs)."""
    if not tracking.page_adopt_run(job):
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
    if not tracking.page_adopt_run(job):
        return []
    try:
        return tracking.list_artifacts(job, path)
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


def job_mlflow_run_url(*, job: Job) -> str:
    """The run's page in the MLflow UI ('' before the job's run is known)."""
    from django.conf import settings

    if not job.mlflow_run_id or not job.mlflow_experiment_id:
        return ""
    base = (settings.AXLE_MLFLOW_UI_URL or settings.AXLE_MLFLOW_TRACKING_URI).rstrip("/")
    return f"{base}/#/experiments/{job.mlflow_experiment_id}/runs/{job.mlflow_run_id}"


# ---------------------------------------------------------------- runs table (sort, dates, metric column)

RUN_SORTS = ("created", "name", "status", "elapsed", "metric")


def job_runs_order(qs: QuerySet[Job], *, sort: str = "", metric: str = "", since=None, until=None) -> QuerySet[Job]:
    """The jobs list's own filters on top of `job_list`: created between two dates, sorted by a
    column (``-`` first for descending); ``metric`` sorts by a final metric, missing ones last."""
    from django.db.models import DurationField, ExpressionWrapper, F
    from django.db.models.fields.json import KeyTransform
    from django.db.models.functions import Coalesce, Now

    if since:
        qs = qs.filter(created_at__date__gte=since)
    if until:
        qs = qs.filter(created_at__date__lte=until)
    descending = sort.startswith("-")
    column = sort.lstrip("-")
    if column not in RUN_SORTS or (column == "metric" and not metric):
        return qs
    if column == "elapsed":
        run_time = Coalesce(F("finished_at"), Now()) - F("started_at")
        qs = qs.annotate(run_time=ExpressionWrapper(run_time, output_field=DurationField()))
        key = F("run_time")
    elif column == "metric":
        qs = qs.annotate(metric_value=KeyTransform(metric, "metrics"))
        key = F("metric_value")
    else:
        key = F({"created": "created_at"}.get(column, column))
    order = key.desc(nulls_last=True) if descending else key.asc(nulls_last=True)
    return qs.order_by(order, "-created_at")


def job_metric_names(*, user, recent: int = 200) -> list[str]:
    """Names of the final metrics among the user's recent jobs: the choices of the metric column."""
    rows = Job.objects.filter(owner=user).exclude(metrics={}).order_by("-created_at").values_list("metrics", flat=True)
    return sorted({name for metrics in rows[:recent] for name in (metrics or {})})
