"""A hub that is configured to log in to MLflow never hands a job "no login" because the server
runs without its auth app (issue 8 review, finding 3): it says what is wrong, and the job waits.

The server here imitates an MLflow started without `--app-name basic-auth`: every API answers
anonymous requests, and the auth app's routes are unknown (a 404 without MLflow's JSON error
body). The same checks against a server with its login are in test_auth.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import CommandError, call_command

from apps.integrations.mlflow import auth
from apps.integrations.mlflow.base import MlflowUnavailable
from apps.integrations.mlflow.client import TrackingClient


class _OpenMlflow(BaseHTTPRequestHandler):
    def _answer(self):
        if "/users/" in self.path or "/permissions/" in self.path:
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b"<!doctype html><title>404 Not Found</title>")
            return
        body = json.dumps({"experiments": []} if "experiments" in self.path else {}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def open_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OpenMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_a_hub_with_a_login_refuses_to_hand_a_job_no_login(open_server):
    hub = TrackingClient(open_server, auth=("axle-hub", "hub-password"))
    with pytest.raises(auth.LoginMissing) as caught:
        auth.user_with_experiment(hub, "axle-job-1", "7")
    assert isinstance(caught.value, MlflowUnavailable)  # transient: job_submit requeues the job
    assert "runs without its login" in str(caught.value) and "--app-name basic-auth" in str(caught.value)
    assert "hub-password" not in str(caught.value)


def test_a_hub_without_a_login_has_none_to_hand_out(open_server, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    assert auth.user_with_experiment(TrackingClient(open_server), "axle-job-1", "7") is None
    assert auth.login_problem(TrackingClient(open_server)) == ""


def test_the_login_problem_is_named_for_status_pages(open_server):
    problem = auth.login_problem(TrackingClient(open_server, auth=("axle-hub", "hub-password")))
    assert "answers anonymous requests" in problem


def test_mlflow_status_fails_with_the_sentence(open_server, settings):
    settings.AXLE_MLFLOW_TRACKING_URI = open_server
    settings.AXLE_MLFLOW_USERNAME, settings.AXLE_MLFLOW_PASSWORD = "axle-hub", "hub-password"
    with pytest.raises(CommandError, match="runs without its login"):
        call_command("mlflow_status")
