"""The tracking client's pure parts and its failures, without the MLflow server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from apps.integrations.mlflow.base import MlflowError, MlflowUnavailable, redact_uri
from apps.integrations.mlflow.client import TrackingClient, directory_sha256, pack_batches


def rows(n: int, prefix: str = "k", value: str | float = 1.0) -> list[dict]:
    return [{"key": f"{prefix}{i}", "value": value, "timestamp": 1, "step": i} for i in range(n)]


def test_it_packs_ten_thousand_points_into_ten_batches():
    batches = pack_batches(rows(10_000), [], [])
    assert len(batches) == 10
    assert all(len(b["metrics"]) == 1000 for b in batches)


def test_params_and_tags_ride_with_the_first_metrics_within_the_limits():
    batches = pack_batches(rows(1500), rows(250, "p", "x"), rows(30, "t", "y"))

    for b in batches:
        assert len(b["params"]) <= 100 and len(b["tags"]) <= 100 and len(b["metrics"]) <= 1000
        assert len(b["params"]) + len(b["tags"]) + len(b["metrics"]) <= 1000
    assert sum(len(b["params"]) for b in batches) == 250
    assert sum(len(b["tags"]) for b in batches) == 30
    assert sum(len(b["metrics"]) for b in batches) == 1500
    assert len(batches) == 3


def test_a_batch_stays_under_a_megabyte_even_with_long_params():
    batches = pack_batches([], rows(300, "p", "x" * 6000), [])
    assert all(len(json.dumps(b)) < 1_000_000 for b in batches)
    assert sum(len(b["params"]) for b in batches) == 300


def test_the_model_hash_depends_on_paths_and_contents_only(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "sub").mkdir(parents=True)
    (a / "MLmodel").write_text("flavors: {}\n")
    (a / "sub" / "w.bin").write_bytes(b"\x00\x01")
    (b / "sub" / "w.bin").write_bytes(b"\x00\x01")  # written in another order
    (b / "MLmodel").write_text("flavors: {}\n")
    assert directory_sha256(a) == directory_sha256(b)

    (b / "sub" / "w.bin").write_bytes(b"\x00\x02")
    assert directory_sha256(a) != directory_sha256(b)


def test_the_model_hash_tells_a_moved_byte_from_a_renamed_file(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_bytes(b"ab")
    (a / "y").write_bytes(b"c")
    (b / "x").write_bytes(b"a")
    (b / "y").write_bytes(b"bc")
    assert directory_sha256(a) != directory_sha256(b)


def test_it_strips_credentials_from_uris_it_shows():
    assert redact_uri("https://alice:s3cret@mlflow.example:8443/base?token=abc") == "https://mlflow.example:8443/base"


def test_an_unreachable_server_is_transient_and_its_message_has_no_password():
    client = TrackingClient("http://alice:s3cret@127.0.0.1:9", timeout=2)
    with pytest.raises(MlflowUnavailable) as caught:
        client.get_run("0123456789abcdef0123456789abcdef")
    assert not caught.value.permanent
    assert "s3cret" not in str(caught.value) and "alice" not in str(caught.value)


class _Canned(BaseHTTPRequestHandler):
    status = 503
    body = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "db locked"}'
    delay = 0.0

    def do_GET(self) -> None:  # noqa: N802
        import time

        time.sleep(self.delay)
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[type[_Canned]]:
    handler = type("Handler", (_Canned,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield handler
    server.shutdown()
    server.server_close()


def test_a_5xx_answer_is_transient(canned):
    with pytest.raises(MlflowUnavailable, match="HTTP 503 db locked"):
        TrackingClient(canned.url).get_run("r")


def test_a_200_answer_that_is_not_json_is_transient_not_a_crash(canned):
    # A proxy's login page in front of MLflow, say: the caller gets MLflow's error, not ValueError.
    canned.status, canned.body = 200, b"<html>please sign in</html>"
    with pytest.raises(MlflowUnavailable, match="not JSON"):
        TrackingClient(canned.url).get_run("r")


def test_a_4xx_answer_is_permanent_and_carries_mlflow_s_code(canned):
    canned.status, canned.body = 400, b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}'
    with pytest.raises(MlflowError) as caught:
        TrackingClient(canned.url).get_run("r")
    assert caught.value.permanent and caught.value.code == "INVALID_PARAMETER_VALUE"
    assert not isinstance(caught.value, MlflowUnavailable)


def test_a_server_slower_than_the_timeout_is_transient(canned):
    canned.delay = 2.0
    with pytest.raises(MlflowUnavailable, match="within 0.5s"):
        TrackingClient(canned.url, timeout=0.5).get_run("r")


def test_it_refuses_a_tracking_uri_that_is_not_http():
    with pytest.raises(MlflowError) as caught:
        TrackingClient("postgresql://u:pw@db/mlflow")
    assert caught.value.permanent and "pw" not in str(caught.value)
