"""Writes for the model registry.

Registering a version talks to MLflow (find the run's model, hash its files, register it in
MLflow's registry) with no database transaction open, then records the version and its audit
event in one short transaction. MLflow's registry cannot be rolled back with the database, so
a retry after a crash between the two first looks for the version MLflow already made."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import CharField, Exists, OuterRef
from django.db.models.functions import Cast
from django.utils import timezone

from apps.accounts.models import Team
from apps.accounts.teams import is_team_member, team_asset_create, team_member_require
from apps.audit.models import AuditEvent
from apps.audit.services import audit_record
from apps.core.errors import Conflict, NotFound, PermissionDenied, Unavailable, ValidationFailed
from apps.integrations.mlflow.base import MlflowError, MlflowUnavailable
from apps.integrations.mlflow.client import TrackingClient
from apps.jobs import tracking
from apps.jobs.models import Job
from apps.sweeps.models import Trial
from apps.sweeps.services import spec_of

from .models import ModelVersion, RegisteredModel
from .ownership import registered_model_ensure

log = logging.getLogger(__name__)

# A model's name appears in URLs (/models/<name>/) and in MLflow's models:/<name>/<n> URIs.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
RESERVED_NAMES = {"register"}  # /models/register/ is the registration form


def _clean_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME_RE.match(name):
        raise ValidationFailed(
            "A model name starts with a letter or digit and uses letters, digits, “.”, “_” and “-” "
            "(at most 200 characters)."
        )
    if name.lower() in RESERVED_NAMES:
        raise ValidationFailed(f"“{name}” is reserved; choose another model name.")
    return name


def _model_for(*, user, name: str, team: Team | None) -> RegisteredModel | None:
    """The existing model `name` if the user may add to it; None when the name is free."""
    model = RegisteredModel.objects.select_related("team").filter(name=name).first()
    if model is None:
        return None
    if not is_team_member(user=user, team=model.team):
        # Names are global, as in MLflow's registry: say it is taken, not whose it is.
        raise Conflict(f"The model name {name} is taken by another team; choose another name.")
    return model


# ---------------------------------------------------------------- registered models


def registered_model_create(*, user, team: Team, name: str, description: str = "") -> RegisteredModel:
    """An empty model in the hub. MLflow's registry gets it with its first version."""
    team_member_require(user=user, team=team)
    name = _clean_name(name)
    taken = Conflict(f"A model named {name} already exists.")
    if RegisteredModel.objects.filter(name=name).exists():
        raise taken
    return team_asset_create(
        RegisteredModel, user=user, team=team, name=name, description=description, action="model.created", taken=taken
    )


# ---------------------------------------------------------------- model versions


@dataclass(frozen=True)
class _Logged:
    source_uri: str
    artifact_uri: str
    sha256: str
    number: int
    metrics: dict


def _plain_metrics(metrics: dict) -> dict[str, float | None]:
    """{name: float}; MLflow points are reduced to their value, NaN and infinities to None
    (JSON has no spelling for them)."""
    plain: dict[str, float | None] = {}
    for key, value in (metrics or {}).items():
        value = getattr(value, "value", value)
        if isinstance(value, dict):
            value = value.get("value")
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        plain[str(key)] = number if math.isfinite(number) else None
    return plain


def _existing_mlflow_version(
    client: TrackingClient, name: str, run_id: str, source: str, artifact_uri: str
) -> int | None:
    """The version MLflow already holds for this run's model, made by an attempt that died
    before the hub recorded it (MLflow keeps `models:/m-…` sources as given and `runs:/`
    ones resolved to their storage URI)."""
    for version in client.search_model_versions(name, run_id=run_id):
        if version.source in (source, artifact_uri):
            return int(version.version)
    return None


def _register_in_mlflow(job: Job, name: str, *, run_id: str | None = None, what: str | None = None) -> _Logged:
    """Register the model that `run_id` (by default the job's run) logged as a version of
    `name` in MLflow's registry; `what` names the run in messages."""
    client = tracking.client()
    run_id = run_id or job.mlflow_run_id
    what = what or f"Job {job.name} ({job.uuid})"
    try:
        source = client.find_logged_model(run_id)
        if source is None:
            raise Conflict(
                f"{what} logged no MLflow model: log one in the job with "
                'mlflow.<flavor>.log_model(model, name="model").'
            )
        sha256 = client.model_sha256(source)
        artifact_uri = client.artifact_uri(source)
        metrics = (job.metrics if run_id == job.mlflow_run_id else None) or client.get_run(run_id).metrics
        registered_model_ensure(client=client, name=name)
        number = _existing_mlflow_version(client, name, run_id, source, artifact_uri)
        if number is None:
            number = int(client.register_model(name, source, run_id).version)
    except MlflowUnavailable as exc:
        raise Unavailable(f"MLflow cannot be reached right now; try again shortly. ({exc})") from None
    except MlflowError as exc:
        raise ValidationFailed(f"MLflow refused to register the model of {what}: {exc}") from None
    return _Logged(source, artifact_uri, sha256, number, _plain_metrics(metrics))


def model_version_register(*, user, model_name: str, job: Job, description: str = "") -> ModelVersion:
    """Register the MLflow model that `job`'s run logged as a new version of `model_name`
    (created, in the job's team, on first use). Registering the same job under the same
    name again returns the version it already made."""
    name = _clean_name(model_name)
    job = Job.objects.select_related("team", "owner").get(pk=job.pk)
    if job.owner_id != user.pk and not is_team_member(user=user, team=job.team):
        raise NotFound("No such job.")
    model = _model_for(user=user, name=name, team=job.team)
    if model is not None:
        existing = ModelVersion.objects.filter(model=model, job=job).select_related("model", "job").first()
        if existing is not None:
            return existing
    team = model.team if model is not None else job.team
    if team is None:
        raise Conflict(f"Job {job.name} belongs to no team; models are kept by a team.")
    if job.status != Job.Status.COMPLETED:
        raise Conflict(
            f"Job {job.name} is {job.get_status_display().lower()}; only a completed job's model can be registered."
        )
    if not job.mlflow_run_id and tracking.run_pending(job):
        raise Conflict(
            f"Job {job.name}'s MLflow run is not recorded yet: the hub records it when it finishes "
            "the job's tracking, seconds after the job ended. Try again in a moment."
        )
    if not job.mlflow_run_id:
        raise Conflict(f"Job {job.name} has no MLflow run, so it logged no MLflow model.")

    logged = _register_in_mlflow(job, name)
    return _record_version(
        user=user, name=name, team=team, description=description, job=job, run_id=job.mlflow_run_id, logged=logged
    )


def model_version_register_from_job(*, job_id: int) -> ModelVersion | None:
    """Automatic registration of a completed job that asked for it, as its owner. A refusal
    that retrying cannot fix is recorded on the job's audit trail; MLflow being down raises,
    so the task fails visibly and can be run again."""
    job = Job.objects.select_related("owner", "team").filter(pk=job_id).first()
    if job is None or not job.register_model_as or job.status != Job.Status.COMPLETED:
        return None
    try:
        return model_version_register(user=job.owner, model_name=job.register_model_as, job=job)
    except Unavailable:
        raise
    except (ValidationFailed, Conflict, NotFound, PermissionDenied) as exc:
        log.warning("automatic registration of job %s as %s failed: %s", job.uuid, job.register_model_as, exc.message)
        with transaction.atomic():
            audit_record(
                action="model_version.register_failed",
                subject=job,
                actor=job.owner,
                after={"model": job.register_model_as, "error": exc.message},
            )
        return None


def model_versions_register_pending(*, within: timedelta = timedelta(days=7)) -> int:
    """Retry automatic registrations that MLflow being down left undone: completed jobs that
    asked for one, were finalized recently, have no version under that name and no recorded
    refusal. Stops at the first outage; returns how many versions it made."""
    registered = ModelVersion.objects.filter(job=OuterRef("pk"), model__name=OuterRef("register_model_as"))
    refused = AuditEvent.objects.filter(
        action="model_version.register_failed", subject_type="jobs.job", subject_id=OuterRef("uuid_text")
    )
    pending = (
        Job.objects.filter(status=Job.Status.COMPLETED, finalized_at__gte=timezone.now() - within)
        .exclude(register_model_as="")
        .annotate(uuid_text=Cast("uuid", CharField()))
        .filter(~Exists(registered), ~Exists(refused))
        .order_by("finalized_at")
        .values_list("pk", flat=True)
    )
    made = 0
    for job_id in list(pending[:100]):
        try:
            if model_version_register_from_job(job_id=job_id) is not None:
                made += 1
        except Unavailable:
            log.info("MLflow is down; pending registrations wait for the next round")
            break
    return made


def model_version_register_trial(*, user, model_name: str, trial: Trial) -> ModelVersion:
    """Register the model a sweep trial's MLflow run logged as a new version of `model_name`
    (created in the sweep's team on first use): the sweep's best trial, in one click. The
    version points at the trial and at its array job, so lineage reads sweep -> job -> model
    version. Registering the same trial under the same name again returns its version."""
    name = _clean_name(model_name)
    trial = Trial.objects.select_related("sweep__team", "sweep__owner", "job__team", "job__owner").get(pk=trial.pk)
    sweep = trial.sweep
    if sweep.owner_id != user.pk and not is_team_member(user=user, team=sweep.team):
        raise NotFound("No such sweep.")
    model = _model_for(user=user, name=name, team=sweep.team)
    if model is not None:
        existing = ModelVersion.objects.filter(model=model, trial=trial).select_related("model", "job").first()
        if existing is not None:
            return existing
    team = model.team if model is not None else sweep.team
    if team is None:
        raise Conflict(f"Sweep {sweep.name} belongs to no team; models are kept by a team.")
    label = f"Trial {trial.number} of sweep {sweep.name}"
    if trial.state != Trial.State.SUCCEEDED:
        raise Conflict(
            f"{label} is {trial.get_state_display().lower()}; only a succeeded trial's model can be registered."
        )
    if trial.job is None or not trial.mlflow_run_id:
        raise Conflict(f"{label} has no MLflow run, so it logged no MLflow model.")

    logged = _register_in_mlflow(trial.job, name, run_id=trial.mlflow_run_id, what=label)
    metrics = {**logged.metrics, **_plain_metrics(trial.metrics)}
    if trial.objective is not None:
        # The trial's objective as the sweep judged it (by its metricStrategies).
        metrics[spec_of(sweep).metric] = trial.objective

    return _record_version(
        user=user,
        name=name,
        team=team,
        job=trial.job,
        trial=trial,
        run_id=trial.mlflow_run_id,
        logged=logged,
        metrics=metrics,
        about={"sweep": str(sweep.uuid), "trial": trial.number},
    )


def _record_version(
    *,
    user,
    name: str,
    team: Team,
    job: Job,
    run_id: str,
    logged: _Logged,
    description: str = "",
    trial: Trial | None = None,
    metrics: dict | None = None,
    about: dict | None = None,
) -> ModelVersion:
    """Record the version MLflow made (the model created in `team` on first use) with its
    audit events; the version of a job (or of a trial) registered meanwhile by a concurrent
    request is handed back instead."""
    mine = {"job": job} if trial is None else {"trial": trial}
    try:
        with transaction.atomic():
            model, created = RegisteredModel.objects.get_or_create(
                name=name, defaults={"team": team, "created_by": user, "description": (description or "").strip()}
            )
            if created:
                audit_record(action="model.created", subject=model, actor=user, after={"team": team.name, "name": name})
            version = ModelVersion.objects.create(
                model=model,
                number=logged.number,
                job=job,
                trial=trial,
                mlflow_run_id=run_id,
                source_uri=logged.source_uri,
                artifact_uri=logged.artifact_uri,
                sha256=logged.sha256,
                metrics=logged.metrics if metrics is None else metrics,
                created_by=user,
            )
            audit_record(
                action="model_version.registered",
                subject=version,
                actor=user,
                after={
                    "model": name,
                    "number": version.number,
                    "job": str(job.uuid),
                    **(about or {}),
                    "mlflow_run_id": run_id,
                    "source_uri": version.source_uri,
                    "artifact_uri": version.artifact_uri,
                    "sha256": version.sha256,
                    "metrics": version.metrics,
                },
            )
    except IntegrityError:
        # A concurrent registration of the same job (or trial) won the race: hand back its version.
        existing = ModelVersion.objects.filter(model__name=name, **mine).select_related("model", "job").first()
        if existing is None:
            raise Conflict(f"Version {logged.number} of {name} was recorded by someone else; try again.") from None
        return existing
    return version
