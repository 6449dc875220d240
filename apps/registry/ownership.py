"""A registered model in MLflow's registry gets the hub's versions only if the hub made it.

MLflow's auth app lets any login create registered models, and makes the creator their
manager, free to read, grant and delete what is registered there. A running job's login may
edit its team's experiment only, but it may create `digits` in the registry before the team
that calls its model `digits` registers a first version; the hub would then put that team's
versions where the job's login reads, re-grants and deletes them.

So, as for experiments (`apps.jobs.experiments`), the hub tags each registered model it
creates with an HMAC of the name under its secret key (`TOKEN_TAG`; another purpose than the
experiments' token, which a team's job logins can read), and registers versions only into a
model that carries it. A name another login took is refused with a clear message (a model's
name is the user's choice, and another name does); the hub logs a warning and records the
audit event `mlflow.model_name_taken`. A model the hub made before the tag existed is
adopted (tagged now): one the hub holds versions of, whose first version was registered
within seconds of the model's creation, as the hub's registration then made both back to
back; the adoption is recorded (audit event `mlflow.model_adopted`). A name someone took
earlier and the hub then registered into stays refused: tagging it would not take its
creator's MANAGE permission away."""

from __future__ import annotations

import hmac
import logging

from django.db import transaction
from django.utils.crypto import salted_hmac

from apps.audit.services import audit_record
from apps.core.errors import Conflict
from apps.integrations.mlflow.base import MlflowError
from apps.integrations.mlflow.client import TrackingClient

from .models import ModelVersion

log = logging.getLogger(__name__)

TOKEN_TAG = "axle.hub_token"


def token(name: str) -> str:
    """The tag value that marks registered model `name` as the hub's."""
    return salted_hmac("axle.registry.model_token", name, algorithm="sha256").hexdigest()


#: How close the hub's own earlier registrations made a model and its first version.
ADOPT_WITHIN_MS = 10_000


def _made_by_the_hub_before_tags(client: TrackingClient, name: str, created_ms: int) -> bool:
    if not ModelVersion.objects.filter(model__name=name, number=1).exists():
        return False
    first = client.model_version_created(name, "1")
    return first is not None and 0 <= first - created_ms <= ADOPT_WITHIN_MS


def registered_model_ensure(*, client: TrackingClient, name: str) -> None:
    """Make sure MLflow's registered model `name` is the hub's: created now with its tag,
    found with it, or adopted (the hub registered versions into it before it was tagged).
    Conflict when another login made it."""
    expected = token(name)
    try:
        client.create_registered_model(name, {TOKEN_TAG: expected})
        return
    except MlflowError as exc:
        if exc.code != "RESOURCE_ALREADY_EXISTS":
            raise
    found = client.registered_model(name)
    if found is None:  # deleted since: one more try
        client.create_registered_model(name, {TOKEN_TAG: expected})
        return
    tags, created_ms = found
    if hmac.compare_digest(tags.get(TOKEN_TAG, ""), expected):
        return
    if TOKEN_TAG not in tags and _made_by_the_hub_before_tags(client, name, created_ms):
        client.set_registered_model_tag(name, TOKEN_TAG, expected)
        _audit("mlflow.model_adopted", name, {"name": name, "tag": TOKEN_TAG, "created_ms": created_ms})
        log.info("MLflow registered model %r, made by the hub before its tag existed, is tagged as the hub's.", name)
        return
    _audit("mlflow.model_name_taken", name, {"name": name})
    log.warning("MLflow registered model %r was not made by the hub, which does not register into it.", name)
    raise Conflict(
        f"The model name {name} is taken in MLflow's model registry by an account outside the hub's "
        "control, so the hub will not register into it; choose another name (an administrator can "
        "look into who made it)."
    )


def _audit(action: str, name: str, after: dict) -> None:
    with transaction.atomic():
        audit_record(
            action=action, subject_type="mlflow.registered_model", subject_id=name, subject_text=name, after=after
        )
