"""Serve models with MLflow's model server, one detached process per deployment, on loopback.

Desired state and actual state live side by side in `<state_dir>/<name>.json`:

    {"format": 1, "name": "...", "namespace": "...",
     "spec": {... DeploymentSpec as a dict, incl. model_uri and artifact_sha256 ...},
     "server":   {"pid", "port", "token", "boot_id", "start_ticks", "started_at",
                  "workdir", "model_uri", "artifact_sha256"},
     "retiring": [ server, ... ]}

`server` is the process started for `spec`. When the spec changes, the old server moves to
`retiring` and keeps answering until the new one is healthy; the first `status` that sees the
new one healthy stops the retiring ones, so a name ends with exactly one server.

A process is ours only if pid, start time in /proc, boot id and the marker in its environment
all match (see procs.py); a new LocalBackend on the same directory (a restarted worker)
adopts what matches and reports the rest not ready, and the caller applies again.

Servers run in their own session, so they outlive the worker that started them; `stop_all()`
is what `./dev down` calls (through the serving app) to stop them.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from apps.integrations.serving.base import BackendStatus, DeploymentSpec, ServingError

from . import procs

log = logging.getLogger(__name__)

FORMAT = 1
LAUNCHER = Path(__file__).with_name("launch.py")
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# What decides which bytes are served; other spec fields (labels, resources) are recorded
# without restarting the server.
IDENTITY = ("model_name", "model_version", "model_uri", "artifact_sha256")
_CREDENTIALS_IN_URL = re.compile(r"(//)[^/@\s]+@")


def _redact(text: str) -> str:
    return _CREDENTIALS_IN_URL.sub(r"\1***@", text)


class LocalBackend:
    def __init__(
        self,
        state_dir: Path,
        mlflow_bin: str = "/var/lib/axle/venv/bin/mlflow",
        *,
        tracking_uri: str,
        host: str = "127.0.0.1",
        port_range: tuple[int, int] = (5100, 5199),
        workers: int = 1,
        verify_sha256: bool = True,
        extra_env: dict[str, str] | None = None,
        request_timeout: float = 30.0,
        stop_grace: float = 10.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.mlflow_bin = mlflow_bin
        # May carry credentials: passed to the server's environment only, never stored or logged.
        self._tracking_uri = tracking_uri
        self._extra_env = dict(extra_env or {})
        self.host = host
        self.port_range = port_range
        self.workers = workers
        self.verify_sha256 = verify_sha256
        self.request_timeout = request_timeout
        self.stop_grace = stop_grace
        self._http = requests.Session()
        self.state_dir.mkdir(parents=True, exist_ok=True)

    # ----- the ServingBackend protocol -------------------------------------------------------

    def apply(self, spec: DeploymentSpec) -> BackendStatus:
        """Make `spec` the thing served under `spec.name`. Returns at once; the server may
        still be downloading and loading the model (follow with `status` or `wait_ready`)."""
        self._check_name(spec.name)
        if self.verify_sha256 and not spec.artifact_sha256:
            raise ServingError(f"{spec.name}: no artifact sha256 to verify the model against", permanent=True)
        with self._lock():
            state = self._load(spec.name)
            if state is not None and state["namespace"] != spec.namespace:
                raise ServingError(f"{spec.name} is already served in namespace {state['namespace']}", permanent=True)
            wanted = dataclasses.asdict(spec)
            if state is None:
                state = {"format": FORMAT, "name": spec.name, "namespace": spec.namespace, "retiring": []}
                server = None
            else:
                server = state.get("server")
            alive = server is not None and self._alive(server)
            if alive and _identity(state["spec"]) == _identity(wanted):
                state["spec"] = wanted
                self._save(state)
                return self._status_of(state)
            if server is not None:
                if alive and _identity(state["spec"]) != _identity(wanted) and self._healthy(server):
                    # Keep answering with the old version until the new one is healthy.
                    state["retiring"].append(server)
                else:
                    self._stop(server)
            state["spec"] = wanted
            state["server"] = self._start(spec, self._ports_taken())
            self._save(state)
            log.info(
                "local serving: started %s (%s) pid %s port %s",
                spec.name,
                spec.model_uri,
                state["server"]["pid"],
                state["server"]["port"],
            )
            return BackendStatus(exists=True, ready=False, url=self._url(state["server"]), message="starting")

    def status(self, name: str, namespace: str) -> BackendStatus:
        self._check_name(name)
        state = self._load(name)
        if state is None or state["namespace"] != namespace:
            return BackendStatus(exists=False, ready=False, message="not deployed")
        result = self._status_of(state)
        if result.ready and state.get("retiring"):
            self._finish_handover(name)
        return result

    def delete(self, name: str, namespace: str) -> None:
        self._check_name(name)
        with self._lock():
            state = self._load(name)
            if state is None or state["namespace"] != namespace:
                return
            self._stop_everything(state)
            self._path(name).unlink(missing_ok=True)
            self._log_path(name).unlink(missing_ok=True)
            log.info("local serving: deleted %s", name)

    def list_names(self, namespace: str) -> list[str]:
        return [state["name"] for state in self._states() if state["namespace"] == namespace]

    def predict(self, name: str, namespace: str, payload: dict) -> dict:
        """POST `payload` (MLflow scoring JSON: inputs, instances, dataframe_split,
        dataframe_records) to the model server. 4xx is the caller's input: permanent, with
        the server's message. No server, or one that cannot be reached: transient."""
        self._check_name(name)
        if not isinstance(payload, dict):
            raise ServingError("the request body must be a JSON object", permanent=True)
        try:
            body = json.dumps(payload).encode()
        except (TypeError, ValueError) as exc:
            raise ServingError(f"the request body is not JSON: {exc}", permanent=True) from None
        state = self._load(name)
        if state is None or state["namespace"] != namespace:
            raise ServingError(f"{name} is not deployed", permanent=True)
        # The current server first; during a handover the retiring one still answers.
        candidates = [s for s in [state.get("server"), *reversed(state.get("retiring", []))] if s]
        candidates = [s for s in candidates if self._alive(s)]
        if not candidates:
            raise ServingError(f"the model server for {name} is not running")
        last: Exception | None = None
        for server in candidates:
            try:
                resp = self._http.post(
                    f"{self._url(server)}/invocations",
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=self.request_timeout,
                )
            except requests.ConnectionError as exc:
                last = exc  # still loading, or just stopped: try the next one
                continue
            except requests.Timeout:
                raise ServingError(f"the model server for {name} did not answer in {self.request_timeout:g}s") from None
            except requests.RequestException as exc:
                raise ServingError(f"the model server for {name} failed: {type(exc).__name__}") from None
            return self._response(name, resp)
        raise ServingError(f"the model server for {name} cannot be reached ({type(last).__name__})")

    # ----- helpers for callers ----------------------------------------------------------------

    def wait_ready(self, name: str, namespace: str, timeout: float = 120.0, interval: float = 0.5) -> BackendStatus:
        """Poll `status` until ready. Raises ServingError when the server exits (permanent if
        it refused the artifact) or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.status(name, namespace)
            if current.ready:
                return current
            if not current.exists:
                raise ServingError(f"{name} is not deployed", permanent=True)
            state = self._load(name)
            if state is not None and not self._alive(state["server"]):
                tail = self._log_tail(name)
                raise ServingError(f"the model server for {name} exited: {tail}", permanent="refusing to serve" in tail)
            if time.monotonic() >= deadline:
                raise ServingError(f"{name} is not ready after {timeout:g}s: {current.message}")
            time.sleep(interval)

    def stop_all(self) -> list[str]:
        """Stop every server under this state directory and forget them (for `./dev down`).
        Returns the names stopped."""
        stopped = []
        with self._lock():
            for state in self._states():
                self._stop_everything(state)
                self._path(state["name"]).unlink(missing_ok=True)
                stopped.append(state["name"])
        return stopped

    # ----- internals --------------------------------------------------------------------------

    def _status_of(self, state: dict[str, Any]) -> BackendStatus:
        server = state["server"]
        url = self._url(server)
        what = f"{state['spec']['model_name']} version {state['spec']['model_version']}"
        if not self._alive(server):
            return BackendStatus(
                exists=True,
                ready=False,
                url=url,
                message=f"the model server is not running; apply again ({self._log_tail(state['name'])})",
            )
        if not self._healthy(server):
            return BackendStatus(exists=True, ready=False, url=url, message=f"loading {what}")
        return BackendStatus(exists=True, ready=True, url=url, message=f"serving {what}")

    def _finish_handover(self, name: str) -> None:
        with self._lock():
            state = self._load(name)
            if state is None or not state.get("retiring") or not self._alive(state["server"]):
                return
            if not self._healthy(state["server"]):
                return
            for old in state["retiring"]:
                self._stop(old)
            state["retiring"] = []
            self._save(state)
            log.info("local serving: %s now served by pid %s only", name, state["server"]["pid"])

    def _start(self, spec: DeploymentSpec, taken: set[int]) -> dict[str, Any]:
        token = secrets.token_hex(8)
        workdir = self.state_dir / "work" / f"{spec.name}-{token}"
        workdir.mkdir(parents=True)
        port = self._free_port(taken)
        venv_bin = str(Path(self.mlflow_bin).parent)
        # A small environment of its own: the worker's (Django secret, database and
        # encryption keys) is not the model's business.
        env = {
            "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "TMPDIR": str(workdir),
            "PYTHONUNBUFFERED": "1",
            "MLFLOW_TRACKING_URI": self._tracking_uri,
            **self._extra_env,
            procs.MARKER: token,
        }
        argv = [
            str(Path(venv_bin) / "python"),
            str(LAUNCHER),
            self.mlflow_bin,
            spec.model_uri,
            spec.artifact_sha256 if self.verify_sha256 else "",
            str(workdir / "model"),
            self.host,
            str(port),
            str(self.workers),
        ]
        with open(self._log_path(spec.name), "ab") as out:
            out.write(f"\n=== {_now()} starting {spec.model_uri} on port {port}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # outlives the worker, and is its own group
                    close_fds=True,
                )
            except OSError as exc:
                shutil.rmtree(workdir, ignore_errors=True)
                raise ServingError(f"cannot start the model server: {exc}", permanent=True) from None
        # Popen would warn when dropped while the server runs; procs.reap collects it instead.
        proc.returncode = 0
        # Until the child has exec'd it still shows the worker's environment, without the
        # marker; wait for that so a status right after apply does not see a stranger.
        deadline = time.monotonic() + 5
        while procs.read_marker(proc.pid) != token and time.monotonic() < deadline:
            procs.reap(proc.pid)
            if procs.read_stat(proc.pid) is None:
                break
            time.sleep(0.01)
        stat = procs.read_stat(proc.pid)
        return {
            "pid": proc.pid,
            "port": port,
            "token": token,
            "boot_id": procs.boot_id(),
            "start_ticks": stat.start_ticks if stat else 0,
            "started_at": _now(),
            "workdir": str(workdir),
            "model_uri": spec.model_uri,
            "artifact_sha256": spec.artifact_sha256,
        }

    def _stop(self, server: dict[str, Any]) -> None:
        if not procs.terminate(server["token"], server["pid"], grace=self.stop_grace):
            log.warning("local serving: pid %s did not stop", server["pid"])
        if server.get("workdir"):
            shutil.rmtree(server["workdir"], ignore_errors=True)

    def _stop_everything(self, state: dict[str, Any]) -> None:
        for server in [*state.get("retiring", []), state.get("server")]:
            if server:
                self._stop(server)

    def _alive(self, server: dict[str, Any]) -> bool:
        return procs.is_ours(server["pid"], server["start_ticks"], server["boot_id"], server["token"])

    def _healthy(self, server: dict[str, Any]) -> bool:
        try:
            return self._http.get(f"{self._url(server)}/ping", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def _response(self, name: str, resp: requests.Response) -> dict:
        if resp.status_code == 200:
            try:
                return resp.json()
            except ValueError:
                raise ServingError(f"the model server for {name} answered with something not JSON") from None
        message = _server_message(resp)
        if 400 <= resp.status_code < 500:
            raise ServingError(message, permanent=True)
        raise ServingError(f"the model server for {name} failed (HTTP {resp.status_code}): {message}")

    def _ports_taken(self) -> set[int]:
        taken = set()
        for state in self._states():
            for server in [state.get("server"), *state.get("retiring", [])]:
                if server:
                    taken.add(server["port"])
        return taken

    def _free_port(self, taken: set[int]) -> int:
        low, high = self.port_range
        for port in range(low, high + 1):
            if port in taken:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                # The same option uvicorn binds with, so a port in TIME_WAIT counts as free.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((self.host, port))
                except OSError:
                    continue
            return port
        raise ServingError(f"no free port in {low}-{high} for another model server")

    def _url(self, server: dict[str, Any]) -> str:
        return f"http://{self.host}:{server['port']}"

    @contextmanager
    def _lock(self) -> Iterator[None]:
        # One lock for the directory: port choice and state files stay consistent across
        # threads and worker processes.
        with open(self.state_dir / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _path(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def _log_path(self, name: str) -> Path:
        return self.state_dir / f"{name}.log"

    def _load(self, name: str) -> dict[str, Any] | None:
        try:
            state = json.loads(self._path(name).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ServingError(f"the state file of {name} cannot be read: {exc}") from None
        if state.get("format") != FORMAT or not state.get("server"):
            raise ServingError(f"the state file of {name} is not one this version understands", permanent=True)
        return state

    def _states(self) -> list[dict[str, Any]]:
        """Every readable state file. One damaged file must not stop the others from being
        listed, reconciled or stopped; it is reported and left for a person to look at."""
        states = []
        for path in sorted(self.state_dir.glob("*.json")):
            if not NAME_RE.match(path.stem):
                continue
            try:
                state = self._load(path.stem)
            except ServingError as exc:
                log.warning("local serving: skipping %s: %s", path.name, exc)
                continue
            if state is not None:
                states.append(state)
        return states

    def _save(self, state: dict[str, Any]) -> None:
        path = self._path(state["name"])
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        os.replace(tmp, path)

    def _log_tail(self, name: str, lines: int = 5) -> str:
        try:
            with open(self._log_path(name), "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 4096))
                text = fh.read().decode(errors="replace")
        except OSError:
            return "no log"
        tail = " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())
        return _redact(tail)[-800:] or "empty log"

    @staticmethod
    def _check_name(name: str) -> None:
        # The name becomes a file name: only a DNS-1123 label, never a path.
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ServingError(f"{name!r} is not a valid deployment name (DNS-1123 label)", permanent=True)


def _identity(spec: dict[str, Any]) -> tuple:
    return tuple(spec.get(key) for key in IDENTITY)


def _server_message(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:2000] or f"HTTP {resp.status_code}"
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])[:2000]
    return json.dumps(body)[:2000]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


__all__ = ["LocalBackend"]
