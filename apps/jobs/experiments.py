"""The MLflow experiment of a team (`team-<name>`) or a user (`user-<username>`): only ever
one the hub made itself.

MLflow's auth app lets any login create experiments and makes it their manager. A job of
team A could create `team-B` before team B's first job; were the hub to use what it finds by
that name, team B's runs would sit where team A's login reads them, grants others on them
and deletes them. So the hub records each experiment it makes (`HubExperiment`) and uses
only those. A name someone else took first is left to them: the hub makes its own under
`<name> (axle <8 hex>)` instead (a team's work goes on; a space and brackets are in no team
or user name, and the random part cannot be taken in advance), logs a warning and records
an audit event for an administrator to look into.

Races between workers are settled in the database, with no transaction open while MLflow
answers: the row is made first, with a random token; every worker creates the experiment
with that token as a tag (`TOKEN_TAG`) and records its id with a compare-and-swap. A worker
whose create finds the name taken reads the tag: its row's token means a fellow worker's
experiment (or one whose worker died before recording it), anything else someone else's.
The token is not logged; only the hub's own row holds it until the experiment exists.

Experiments made before this record existed are recorded by migration 0009 from the ids
the hub's jobs and sweeps hold: the hub adopts only what it already used."""

from __future__ import annotations

import logging
import secrets

from django.db import transaction

from apps.audit.services import audit_record
from apps.integrations.mlflow.base import MlflowError, MlflowUnavailable
from apps.integrations.mlflow.client import TrackingClient

from .models import HubExperiment

log = logging.getLogger(__name__)

TOKEN_TAG = "axle.hub_token"
_ATTEMPTS = 4  # each taken name costs one: a second squat of a random name is not expected


def distinct_name(name: str) -> str:
    return f"{name} (axle {secrets.token_hex(4)})"


def experiment_ensure(*, name: str, tracking: TrackingClient) -> str:
    """The id of the hub's experiment `name`, made (once, across workers) if there is none."""
    row, _ = HubExperiment.objects.get_or_create(
        name=name, defaults={"mlflow_name": name, "token": secrets.token_urlsafe(24)}
    )
    for _ in range(_ATTEMPTS):
        if row.experiment_id:
            return row.experiment_id
        experiment_id, someone_elses = _create_or_find_ours(tracking, row)
        if experiment_id:
            HubExperiment.objects.filter(pk=row.pk, experiment_id="").update(experiment_id=experiment_id)
        elif someone_elses:
            _take_another_name(row, someone_elses)
        row.refresh_from_db()
    if row.experiment_id:
        return row.experiment_id
    raise MlflowUnavailable(f"The hub could not make its MLflow experiment {name!r}: every name it tried was taken.")


def _create_or_find_ours(tracking: TrackingClient, row: HubExperiment) -> tuple[str, str]:
    """(id, "") of the experiment `row.mlflow_name` made with the row's token, created now or
    by a fellow worker; ("", id) when that name is someone else's experiment."""
    try:
        return tracking.create_experiment(row.mlflow_name, {TOKEN_TAG: row.token}), ""
    except MlflowError as exc:
        if exc.code != "RESOURCE_ALREADY_EXISTS":
            raise
    found = tracking.experiment_by_name(row.mlflow_name)
    if found is None:
        return "", ""  # taken a moment ago, deleted for good since: the next attempt creates it
    experiment_id, tags = found
    if row.token and secrets.compare_digest(tags.get(TOKEN_TAG, ""), row.token):
        return experiment_id, ""
    return "", experiment_id


def _take_another_name(row: HubExperiment, someone_elses: str) -> None:
    """Leave `row.mlflow_name` to whoever took it; the next attempt creates a name of the
    hub's own. Of racing workers, one moves the row (and records why); the others follow."""
    taken, new_name = row.mlflow_name, distinct_name(row.name)
    with transaction.atomic():
        moved = HubExperiment.objects.filter(pk=row.pk, mlflow_name=taken, experiment_id="").update(
            mlflow_name=new_name
        )
        if moved:
            audit_record(
                action="mlflow.experiment_name_taken",
                subject_type="mlflow.experiment",
                subject_id=someone_elses,
                subject_text=taken,
                after={"name": row.name, "taken_experiment_id": someone_elses, "hub_mlflow_name": new_name},
            )
    if moved:
        log.warning(
            "MLflow experiment %r (id %s) was not made by the hub, which does not use it: %s's runs go to %r.",
            taken,
            someone_elses,
            row.name,
            new_name,
        )
