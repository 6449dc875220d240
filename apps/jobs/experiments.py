"""The MLflow experiment of a team (`team-<name>`) or a user (`user-<username>`): only ever
one the hub made itself.

MLflow's auth app lets any login create experiments and makes it their manager, free to
grant them to anyone. A job of team A could create `team-B` before team B's first job; were
the hub to use what it finds by that name, team B's runs would sit where team A's login
reads them, grants others on them and deletes them. So the hub records the experiment it
makes for each team and user (`HubExperiment`, found by the team's or user's id, not its
name: a renamed team keeps its experiment, and a new team given the old name gets one of
its own) and uses only that.

Telling its own experiment from another's: the hub tags each experiment it creates with an
HMAC of the experiment's name and its owner's key (team or user id) under the hub's secret
key (`TOKEN_TAG`). Whoever creates an experiment may set any tag on it, but cannot compute
this one; the tag of a team's own experiment, which the team's job logins can read, is worth
nothing for any other name or team (a renamed team's experiment is not a new team's of the
same name: it finds the name taken and makes `<name> (axle …)`).
Workers racing to make the same experiment converge on one: the loser's create finds the
name taken and the tag its own. An experiment whose worker died before recording it, or
made by a hub whose database was since restored from a backup, is recognised the same way.

A name another login took first is left to it: the hub makes `<name> (axle <8 hex>)`
instead, the hex from the same HMAC, so it cannot be taken in advance and every worker picks
the same one. A team's work goes on (refusing would let any login block another team until
an administrator steps in); the hub logs a warning and records an audit event
(`mlflow.experiment_name_taken`) for an administrator to look into. A space and brackets
are in no team's or user's name: the new name is no one else's `team-…` or `user-…`.

The recorded experiment is looked up in MLflow each time (one call per submission batch and
experiment): one an MLflow administrator deleted is restored, one deleted for good is
replaced by a new one, each with an audit event (`mlflow.experiment_restored`,
`mlflow.experiment_gone`). A job makes its own run in it, on the compute node, so an
experiment that cannot take runs is put right before sbatch.

Recording is settled in the database (a unique name: the first row wins, with its audit
event in the same transaction), with no transaction open while MLflow answers. Experiments
made before this record existed are recorded by migration 0009 from the ids the hub's jobs
and sweeps hold: the hub adopts only what it already used."""

from __future__ import annotations

import hmac
import logging

from django.db import transaction
from django.utils.crypto import salted_hmac

from apps.audit.services import audit_record
from apps.integrations.mlflow.base import MlflowError, MlflowUnavailable
from apps.integrations.mlflow.client import TrackingClient

from .models import HubExperiment

log = logging.getLogger(__name__)

TOKEN_TAG = "axle.hub_token"
_ATTEMPTS = 4  # a name someone else took costs one; the hub's own names cannot be guessed


def _hmac(purpose: str, value: str) -> str:
    return salted_hmac(f"axle.jobs.experiments.{purpose}", value, algorithm="sha256").hexdigest()


def owner_key(*, team_id: int | None, user_id: int) -> str:
    """Whose experiment it is (`HubExperiment.key`): the team's, else the user's, by id."""
    return f"team:{team_id}" if team_id else f"user:{user_id}"


def token(mlflow_name: str, key: str) -> str:
    """The tag value that marks experiment `mlflow_name` as the hub's experiment for `key`:
    bound to whose it is, so a team given a renamed team's old name does not take the
    renamed team's experiment (same MLflow name) for its own."""
    return _hmac("token", f"{key}\n{mlflow_name}")


def _legacy_token(mlflow_name: str) -> str:
    """The tag the hub put on its experiments before the token was bound to their owner
    (migration 0011): honoured only for an experiment no record holds (see `_ours`)."""
    return _hmac("token", mlflow_name)


def _ours(tag: str, mlflow_name: str, experiment_id: str, key: str) -> bool:
    """The experiment found by name is the hub's for `key`: its token says so, or it carries
    the older, owner-less token and no record holds it (a database restored from a backup
    older than the experiment). An experiment recorded for anyone (a renamed team's, whose
    old name a new team now has) is never taken by the older token."""
    if hmac.compare_digest(tag, token(mlflow_name, key)):
        return True
    return hmac.compare_digest(tag, _legacy_token(mlflow_name)) and not (
        HubExperiment.objects.filter(experiment_id=experiment_id).exists()
    )


def candidate_name(name: str, attempt: int, key: str) -> str:
    """The MLflow name to try for `name`: itself first, then names only the hub can work out."""
    return name if attempt == 0 else f"{name} (axle {_hmac('name', f'{key}#{name}#{attempt}')[:8]})"


def experiment_ensure(*, key: str, name: str, tracking: TrackingClient) -> str:
    """The id of the hub's experiment `name`, made (once, whichever worker asks) if there is
    none, and usable: one an MLflow administrator deleted is restored (it holds the team's
    runs, which lineage points to), one deleted for good is replaced by a new one. Either is
    an audit event. A job logs to this experiment itself (it makes its run there), so an
    experiment that cannot take runs must be found here, before sbatch, not by the job."""
    row = HubExperiment.objects.filter(key=key).first()
    if row is not None:
        stage = tracking.experiment_stage(row.experiment_id)
        if stage == "active":
            return row.experiment_id
        if stage is not None:
            tracking.restore_experiment(row.experiment_id)
            _note(row, "mlflow.experiment_restored", "was deleted in MLflow; the hub restored it")
            return row.experiment_id
        with transaction.atomic():
            if HubExperiment.objects.filter(pk=row.pk, experiment_id=row.experiment_id).delete()[0]:
                _audit(row, "mlflow.experiment_gone")
        log.warning(
            "MLflow experiment %r (id %s) of %s is gone from MLflow; the hub makes a new one.",
            row.mlflow_name,
            row.experiment_id,
            name,
        )
    taken: list[tuple[str, str]] = []  # (name, id) of experiments someone else made
    attempt = 0
    for _ in range(_ATTEMPTS):
        mlflow_name = candidate_name(name, attempt, key)
        experiment_id, someone_elses = _create_or_find_ours(tracking, mlflow_name, key)
        if experiment_id:
            return _record(key, name, mlflow_name, experiment_id, taken)
        if someone_elses:
            taken.append((mlflow_name, someone_elses))
            attempt += 1
    raise MlflowUnavailable(f"The hub could not make its MLflow experiment for {name}: every name it tried was taken.")


def _create_or_find_ours(tracking: TrackingClient, mlflow_name: str, key: str) -> tuple[str, str]:
    """(id, "") of the hub's experiment `mlflow_name`, created now or found with the hub's
    tag; ("", id) when someone else made it; ("", "") when it was gone by the time it was
    looked up (deleted for good): worth another try."""
    try:
        return tracking.create_experiment(mlflow_name, {TOKEN_TAG: token(mlflow_name, key)}), ""
    except MlflowError as exc:
        if exc.code != "RESOURCE_ALREADY_EXISTS":
            raise
    found = tracking.experiment_by_name(mlflow_name)
    if found is None:
        return "", ""
    experiment_id, tags = found
    if _ours(tags.get(TOKEN_TAG, ""), mlflow_name, experiment_id, key):
        # The hub's, but perhaps in MLflow's bin (a name stays taken while it is there): runs
        # cannot go to a deleted experiment, so it is restored.
        if tracking.experiment_stage(experiment_id) == "deleted":
            tracking.restore_experiment(experiment_id)
            _note(
                HubExperiment(name=key, mlflow_name=mlflow_name, experiment_id=experiment_id),
                "mlflow.experiment_restored",
                "was deleted in MLflow; the hub restored it",
            )
        return experiment_id, ""
    return "", experiment_id


def _audit(row: HubExperiment, action: str) -> None:
    audit_record(
        action=action,
        subject_type="mlflow.experiment",
        subject_id=row.experiment_id,
        subject_text=row.mlflow_name,
        after={"name": row.name, "mlflow_name": row.mlflow_name, "experiment_id": row.experiment_id},
    )


def _note(row: HubExperiment, action: str, what: str) -> None:
    with transaction.atomic():
        _audit(row, action)
    log.warning("MLflow experiment %r (id %s) of %s %s.", row.mlflow_name, row.experiment_id, row.name, what)


def _record(key: str, name: str, mlflow_name: str, experiment_id: str, taken: list[tuple[str, str]]) -> str:
    """The recorded id for `name`: this one, or a racing worker's if it recorded first (the
    same experiment: both found the same names taken and the same one the hub's)."""
    with transaction.atomic():
        row, created = HubExperiment.objects.get_or_create(
            key=key, defaults={"name": name, "mlflow_name": mlflow_name, "experiment_id": experiment_id}
        )
        if created and taken:
            audit_record(
                action="mlflow.experiment_name_taken",
                subject_type="mlflow.experiment",
                subject_id=taken[0][1],
                subject_text=taken[0][0],
                after={"name": name, "taken": [{"name": n, "id": i} for n, i in taken], "hub_mlflow_name": mlflow_name},
            )
    if created and taken:
        log.warning(
            "MLflow experiment %r (id %s) was not made by the hub, which does not use it: %s's runs go to %r.",
            taken[0][0],
            taken[0][1],
            name,
            mlflow_name,
        )
    return row.experiment_id
