"""Serve models with MLflow's scoring server, one detached process per deployment, each run
as a Unix user of its own and reachable only over a Unix socket.

The servers' users are a pool, `<server_user>-0` … `<server_user>-<pool_size - 1>`
(`axle-serve-0`…, made by compose/local/stack.sh): a server takes a free slot when it starts
and frees it when it stops, so no two running servers share a user. Slot N's folder,
`<server_root>/slot-N`, belongs to its user, setgid to the hub's group, 2750: one model's
code cannot read another's files, reach or replace its socket, or signal or trace it. The
hub allocates the slot, builds every path itself (slot folder + token; nothing the launcher
prints is taken as a path), and before each request checks with SO_PEERCRED that the process
answering on the socket is the recorded server running as its slot's user.

Desired state and actual state live side by side in `<state_dir>/<name>.json` (the hub's own
folder, which the serving users cannot read):

    {"format": 3, "name": "...", "namespace": "...", "owner": "<deployment id>",
     "spec": {... DeploymentSpec as a dict, incl. model_uri and artifact_sha256 ...},
     "server":   {"slot", "pid", "uid", "token", "boot_id", "start_ticks", "started_at",
                  "workdir", "socket", "model_uri", "artifact_sha256"},
     "retiring": [ server, ... ]}

A slot is busy while a state file names it or while any process runs as its user (a server
of an earlier hub that would not stop); a free slot's folder is emptied by the launcher
before the next server moves in. Each server's output goes to `server.log` in its slot's
folder (capped, one older copy), which the hub reads through its group.

A name belongs to one owner (the deployment): applying a spec of another owner under it is
refused, never a silent replacement. `server` is the process started for `spec`. When the
spec changes, the old server moves to `retiring` and keeps answering until the new one is
healthy; the first `status` that sees the new one healthy stops the retiring ones.

The hub hands the server its model: `spec.model_path` is a copy the hub fetched from MLflow
and checked against the approved sha256; it is checked again here, then streamed to the
launcher (launch.py), which writes it read-only into the server's own folder in its slot.
The server therefore needs no MLflow credentials and no access to the hub's files.
Starting and stopping go through `sudo -u <slot user>` (procs.ServingUser).

A process is ours only if pid, start time, boot id, owner uid (its slot's user) and the
socket in its command line all match (see procs.py); a new LocalBackend on the same directory (a restarted worker)
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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apps.integrations.mlflow.client import directory_sha256
from apps.integrations.serving.base import BackendStatus, DeploymentSpec, ServingError

from . import launch, procs, slots, uds

log = logging.getLogger(__name__)

FORMAT = 3
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
        python: str,
        *,
        server_root: Path,
        server_user: str,
        server_group: str = "",
        pool_size: int = 8,
        workers: int = 1,
        verify_sha256: bool = True,
        request_timeout: float = 30.0,
        stop_grace: float = 10.0,
        start_timeout: float = 300.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.server_root = Path(server_root)
        self.slots = slots.Slots(self.server_root, server_user, pool_size, python, server_group)
        self.workers = workers
        self.verify_sha256 = verify_sha256
        self.request_timeout = request_timeout
        self.stop_grace = stop_grace
        self.start_timeout = start_timeout
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    # ----- the ServingBackend protocol -------------------------------------------------------

    def apply(self, spec: DeploymentSpec) -> BackendStatus:
        """Make `spec` the thing served under `spec.name`. Returns once the server process
        runs; it may still be loading the model (follow with `status` or `wait_ready`)."""
        self._check_name(spec.name)
        if self.verify_sha256 and not spec.artifact_sha256:
            raise ServingError(f"{spec.name}: no artifact sha256 to verify the model against", permanent=True)
        with self._lock():
            state = self._load(spec.name)
            if state is not None and state["namespace"] != spec.namespace:
                raise ServingError(f"{spec.name} is already served in namespace {state['namespace']}", permanent=True)
            if state is not None and state.get("owner") and state["owner"] != spec.owner:
                raise ServingError(
                    f"{spec.name} serves another deployment ({state['owner']}); refusing to replace it.",
                    permanent=True,
                )
            wanted = dataclasses.asdict(spec)
            wanted.pop("model_path", None)  # a temporary folder of the hub's, gone after this call
            if state is None:
                state = {"format": FORMAT, "name": spec.name, "namespace": spec.namespace, "retiring": []}
                server = None
            else:
                server = state.get("server")
            state["owner"] = spec.owner
            alive = server is not None and self._alive(server)
            if alive and _identity(state["spec"]) == _identity(wanted):
                state["spec"] = wanted
                self._save(state)
                return self._status_of(state)
            new = self._start(spec)
            if server is not None:
                if alive and self._healthy(server):
                    # Keep answering with the old version until the new one is healthy.
                    state["retiring"].append(server)
                else:
                    self._stop(server, spec.name)
            state["spec"] = wanted
            state["server"] = new
            self._save(state)
            log.info("local serving: started %s (%s) pid %s", spec.name, spec.model_uri, new["pid"])
            return BackendStatus(exists=True, ready=False, url=self._url(new), message="starting", changed=True)

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
            log.info("local serving: deleted %s", name)

    def list_names(self, namespace: str) -> list[str]:
        return [state["name"] for state in self._states() if state["namespace"] == namespace]

    def owner_of(self, name: str, namespace: str) -> str:
        """The owner recorded for `name`, or "" when nothing is served under it."""
        self._check_name(name)
        state = self._load(name)
        return (state or {}).get("owner", "") if state and state["namespace"] == namespace else ""

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
        last = ""
        for server in candidates:
            try:
                code, answer = uds.request(
                    str(self.slots.socket(server)),
                    "POST",
                    "/invocations",
                    body=body,
                    timeout=self.request_timeout,
                    peer=self.slots.peer_check(server),
                )
            except uds.WrongPeer as exc:
                log.warning("local serving: %s: %s", name, exc)
                raise ServingError(f"refusing to send the request for {name}: {exc}") from None
            except uds.Unreachable as exc:
                last = str(exc)  # still loading, or just stopped: try the next one
                continue
            except uds.TimedOut:
                raise ServingError(f"the model server for {name} did not answer in {self.request_timeout:g}s") from None
            return self._response(name, code, answer)
        raise ServingError(f"the model server for {name} cannot be reached ({last})")

    # ----- helpers for callers ----------------------------------------------------------------

    def wait_ready(self, name: str, namespace: str, timeout: float = 120.0, interval: float = 0.5) -> BackendStatus:
        """Poll `status` until ready. Raises ServingError when the server exits or `timeout`
        passes."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.status(name, namespace)
            if current.ready:
                return current
            if not current.exists:
                raise ServingError(f"{name} is not deployed", permanent=True)
            state = self._load(name)
            if state is not None and not self._alive(state["server"]):
                raise ServingError(f"the model server for {name} exited: {self._log_tail(state['server'])}")
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
                message=f"the model server is not running; apply again ({self._log_tail(server)})",
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
                self._stop(old, name)
            state["retiring"] = []
            self._save(state)
            log.info("local serving: %s now served by pid %s only", name, state["server"]["pid"])

    def _allocate(self) -> int:
        """A slot for a new server: one no state names (and no process runs as). Called
        under the lock."""
        return self.slots.allocate({s["slot"] for st in self._states() for s in [st["server"], *st["retiring"]]})

    # ----- starting and stopping ------------------------------------------------------------

    def _start(self, spec: DeploymentSpec) -> dict[str, Any]:
        if not spec.model_path or not Path(spec.model_path).is_dir():
            raise ServingError(f"{spec.name}: no local copy of the model was handed over to serve", permanent=True)
        if self.verify_sha256:
            actual = directory_sha256(spec.model_path)
            if actual != spec.artifact_sha256:
                raise ServingError(
                    f"refusing to serve {spec.model_uri}: its artifact sha256 is {actual}, "
                    f"the approved one {spec.artifact_sha256}",
                    permanent=True,
                )
        slot = self._allocate()
        user = self.slots.user(slot)
        root = self.slots.ready_root(slot)
        token = secrets.token_hex(8)
        log.info("local serving: starting %s (%s) as %s", spec.name, spec.model_uri, user.name)
        try:
            started = user.run(
                "start",
                str(root),
                token,
                str(self.workers),
                feed=lambda stream: launch.pack(spec.model_path, stream),
                timeout=self.start_timeout,
            )
        except ServingError as exc:
            raise ServingError(_redact(exc.message), permanent=exc.permanent) from None
        server = {
            "slot": slot,
            "pid": int(started["pid"]),
            "uid": user.uid,
            "token": token,
            "boot_id": str(started["boot_id"]),
            "start_ticks": int(started["start_ticks"]),
            "started_at": _now(),
            "model_uri": spec.model_uri,
            "artifact_sha256": spec.artifact_sha256,
        }
        # Paths are the hub's own: the slot's folder and the token it chose.
        server.update(workdir=str(self.slots.workdir(server)), socket=str(self.slots.socket(server)))
        return server

    def _stop(self, server: dict[str, Any], name: str) -> None:
        try:
            result = self.slots.user(server["slot"]).run(
                "stop",
                str(self.slots.root(server["slot"])),
                server["token"],
                str(self.stop_grace),
                timeout=self.stop_grace + 30,
            )
        except ServingError as exc:
            log.warning("local serving: stopping %s (pid %s) failed: %s", name, server["pid"], exc)
            return
        if not result.get("stopped"):
            log.warning("local serving: %s (pid %s) did not stop", name, server["pid"])

    def _stop_everything(self, state: dict[str, Any]) -> None:
        for server in [*state.get("retiring", []), state.get("server")]:
            if server:
                self._stop(server, state["name"])

    def _alive(self, server: dict[str, Any]) -> bool:
        return procs.is_ours(
            server["pid"], server["start_ticks"], server["boot_id"], server["uid"], str(self.slots.socket(server))
        )

    def _healthy(self, server: dict[str, Any]) -> bool:
        try:
            return (
                uds.request(
                    str(self.slots.socket(server)), "GET", "/ping", timeout=2, peer=self.slots.peer_check(server)
                )[0]
                == 200
            )
        except (uds.Unreachable, uds.TimedOut):
            return False
        except uds.WrongPeer as exc:
            log.warning("local serving: %s", exc)
            return False

    def _response(self, name: str, code: int, body: bytes) -> dict:
        if code == 200:
            try:
                return json.loads(body)
            except ValueError:
                raise ServingError(f"the model server for {name} answered with something not JSON") from None
        message = _server_message(code, body)
        if 400 <= code < 500:
            raise ServingError(message, permanent=True)
        raise ServingError(f"the model server for {name} failed (HTTP {code}): {message}")

    def _url(self, server: dict[str, Any]) -> str:
        return f"unix:{self.slots.socket(server)}"

    @contextmanager
    def _lock(self) -> Iterator[None]:
        # One lock for the directory: state files stay consistent across threads and
        # worker processes.
        with open(self.state_dir / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _path(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def _load(self, name: str) -> dict[str, Any] | None:
        try:
            state = json.loads(self._path(name).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ServingError(f"the state file of {name} cannot be read: {exc}") from None
        if state.get("format") in (1, 2) and state.get("server"):
            # Format 1 ran as the worker's user on a TCP port, format 2 as one user shared by
            # every server; only that version knows how to stop them.
            raise ServingError(
                f"{name} was started by an older Axle (pid {state['server'].get('pid')}, as "
                f"{'the worker' if state['format'] == 1 else 'the shared serving user'}): stop it with that "
                f"version's ./dev down, or end that process and remove {self._path(name)}",
                permanent=True,
            )
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

    def _log_tail(self, server: dict[str, Any], lines: int = 5) -> str:
        """The end of the server's own log, in its slot's folder (the hub reads it through its
        group)."""
        try:
            with open(self.slots.log_file(server), "rb") as fh:
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


def _server_message(code: int, body: bytes) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()[:2000] or f"HTTP {code}"
    if isinstance(parsed, dict) and parsed.get("message"):
        return str(parsed["message"])[:2000]
    return json.dumps(parsed)[:2000]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


__all__ = ["LocalBackend"]
