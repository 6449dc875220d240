"""Users and permissions on an MLflow server that runs MLflow's basic-auth app
(`mlflow server --app-name basic-auth`, with `default_permission = NO_PERMISSIONS`).

The hub holds the server's admin credential. Each job gets a user of its own, made at
submission with EDIT on its team's experiment and nothing else (MLflow grants per experiment
or registered model; a run cannot be granted on its own), and deleted when the job is
finalized. A server without the auth app answers 404 to these endpoints: when the hub has a
login of its own configured (AXLE_MLFLOW_USERNAME, required in production) that is an error
(`LoginMissing`): the server accepts anonymous requests and a job would reach every team's
runs. Only a hub without a login (local development) gets None: no login to hand out.

Any login may create experiments and registered models on such a server (MLflow's auth app
grants creation to every user and MANAGE to the creator, who may then grant it to anyone):
the hub never uses a team's experiment it did not make itself (`apps.jobs.experiments`).

Passwords are never logged, put in an exception or returned in a repr.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

import requests

from .base import MlflowError, MlflowUnavailable
from .client import TrackingClient

USERS_CREATE = "api/2.0/mlflow/users/create"
USERS_UPDATE_PASSWORD = "api/2.0/mlflow/users/update-password"
USERS_DELETE = "api/2.0/mlflow/users/delete"
PERMISSIONS_GRANT = "api/3.0/mlflow/users/permissions/grant"


@dataclass(frozen=True)
class Credential:
    username: str
    password: str = field(repr=False)

    def environment(self) -> dict[str, str]:
        """What MLflow's client in a job reads to log in."""
        return {"MLFLOW_TRACKING_USERNAME": self.username, "MLFLOW_TRACKING_PASSWORD": self.password}


def _call(client: TrackingClient, method: str, path: str, what: str, body: dict) -> None:
    client._request(
        method, path, what=what, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )


class LoginMissing(MlflowUnavailable):
    """The server runs without MLflow's auth app although the hub is configured to log in.
    Transient: a job waits (and is retried) until an administrator restarts MLflow with it."""


def login_missing_message(client: TrackingClient) -> str:
    return (
        f"MLflow at {client.display_uri} runs without its login (no basic-auth app) although the hub is "
        "configured to log in (AXLE_MLFLOW_USERNAME): it answers anonymous requests, so a job would reach every "
        "team's runs. Start MLflow with `--app-name basic-auth` (README, Security)."
    )


def _without_auth_app(exc: MlflowError) -> bool:
    # An unknown route is a 404 without MLflow's JSON error body (and so without a code).
    return exc.status == 404 and not exc.code


def _fail_closed(client: TrackingClient) -> None:
    if client.session.auth:
        raise LoginMissing(login_missing_message(client))


def login_problem(client: TrackingClient) -> str:
    """What is wrong with the server's login, in a sentence; "" when it refuses anonymous
    requests, or when the hub has no login configured (local development). For status pages."""
    if not client.session.auth:
        return ""
    try:
        # Not the client's session: that one would add the hub's login.
        resp = requests.get(
            f"{client.base_url}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, timeout=client.timeout
        )
    except requests.RequestException as exc:  # its text can repeat the URL: not included
        return f"MLflow at {client.display_uri} cannot be reached ({type(exc).__name__})."
    if resp.status_code == 401:
        return ""
    return login_missing_message(client)


def user_with_experiment(
    client: TrackingClient, username: str, experiment_id: str, permission: str = "EDIT"
) -> Credential | None:
    """A user that may `permission` experiment `experiment_id` and nothing else."""
    return user_with_permissions(client, username, [("experiment", str(experiment_id), permission)])


def user_with_permissions(
    client: TrackingClient, username: str, grants: list[tuple[str, str, str]]
) -> Credential | None:
    """A user holding exactly `grants` ((resource type, id, permission): ("experiment", "7",
    "EDIT"), ("registered_model", "digits", "READ")), with a fresh random password (a user left
    by an earlier attempt gets a new one). None when the server runs without the auth app,
    and at once, without asking, when the hub has no login of its own (local development):
    such a hub has no admin to make users with, and on a server with the auth app its own
    anonymous calls (the job's run) were refused before this one."""
    if not (client.session.auth or "Authorization" in client.session.headers):
        return None
    password = secrets.token_urlsafe(32)
    try:
        _call(client, "POST", USERS_CREATE, "creating a user", {"username": username, "password": password})
    except MlflowError as exc:
        if _without_auth_app(exc):
            _fail_closed(client)
            return None
        if exc.code != "RESOURCE_ALREADY_EXISTS":
            raise
        body = {"username": username, "password": password}
        _call(client, "PATCH", USERS_UPDATE_PASSWORD, "renewing a user's password", body)
    for resource_type, resource_id, permission in grants:
        body = {
            "username": username,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "permission": permission,
        }
        try:
            _call(client, "POST", PERMISSIONS_GRANT, f"granting a user {permission} on a {resource_type}", body)
        except MlflowError as exc:
            # Granted by an earlier attempt for the same user.
            if exc.code != "RESOURCE_ALREADY_EXISTS":
                raise
    return Credential(username, password)


def model_reader(client: TrackingClient, username: str, model_name: str, experiment_id: str) -> Credential | None:
    """A user that may download registered model `model_name` and nothing else of anyone's.
    MLflow serves a model version's files from its source experiment's artifacts, so READ on
    the registered model alone is not enough: the experiment it was logged in is granted too
    (read-only)."""
    return user_with_permissions(
        client, username, [("registered_model", model_name, "READ"), ("experiment", str(experiment_id), "READ")]
    )


def user_delete(client: TrackingClient, username: str) -> bool:
    """Delete `username`; False when there was nothing to delete (or no auth app)."""
    try:
        _call(client, "DELETE", USERS_DELETE, "deleting a user", {"username": username})
    except MlflowError as exc:
        if _without_auth_app(exc) or exc.code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True
