"""A small client of the portal's REST API (/api/v1/, OpenAPI schema at /api/schema/).

Every method returns the API's JSON (dicts and lists) and raises an `AxleError` subclass with
the portal's own message when it refuses; the command line is built on it and nothing else."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial

import httpx

from . import config as config_mod
from .errors import BY_STATUS, AxleError, NotFoundError, UnavailableError, UsageError

JOB_TERMINAL = frozenset({"completed", "failed", "cancelled", "timeout", "out_of_memory", "node_fail"})
SWEEP_TERMINAL = frozenset({"succeeded", "failed", "stopped"})
# The pipeline run's states as the pipelines app names them; unknown ones count as not ended.
PIPELINE_TERMINAL = frozenset({"succeeded", "completed", "failed", "cancelled", "canceled", "stopped", "skipped"})
PIPELINE_SUCCESS = frozenset({"succeeded", "completed"})
DEPLOYMENT_SETTLED = frozenset({"live", "failed", "rejected", "retired", "rolled_back"})

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def _poll(read: Callable[[], dict], *, key: Callable[[dict], object], interval: float, on_change) -> Iterator[dict]:
    """`read()` again and again, `interval` seconds apart, for as long as the caller takes
    more; `on_change(thing)` hears each thing whose `key` differs from the last one read."""
    seen = None
    while True:
        thing = read()
        if key(thing) != seen and on_change:
            on_change(thing)
        seen = key(thing)
        yield thing
        time.sleep(interval)


def _status(thing: dict) -> str:
    return thing["status"]


def _status_reason(job: dict) -> tuple:
    return job["status"], job.get("reason")


def _message(body) -> tuple[str, list[dict]]:
    """The portal's message and problem list from an error body: `{"detail": …, "problems": […]}`
    or, for refused fields, `{"field": ["…"], "nested": {"field": ["…"]}}`."""
    if not isinstance(body, dict):
        return (str(body)[:500] if body else ""), []
    problems = body.get("problems") if isinstance(body.get("problems"), list) else []
    if "detail" in body:
        return str(body["detail"]), problems
    parts = []

    def walk(prefix: str, value):
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            parts.append(f"{prefix}: {' '.join(value)}" if prefix else " ".join(value))
        elif isinstance(value, list):
            for i, sub in enumerate(value):
                walk(f"{prefix}[{i}]", sub)
        else:
            parts.append(f"{prefix}: {value}")

    walk("", {k: v for k, v in body.items() if k != "problems"})
    return "; ".join(parts), problems


class Client:
    """`Client(url, token=…)`; `Client.from_config()` reads what `axle login` stored."""

    def __init__(self, url: str, token: str = "", *, timeout: float = 60.0, transport=None):
        self.url = url.rstrip("/")
        self.token = token
        headers = {"Accept": "application/json", "User-Agent": "axle-client/0.1"}
        if token:
            headers["Authorization"] = f"Token {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)
        self.last_job: dict | None = None  # the job as job_follow() last read it

    @classmethod
    def from_config(cls, *, need_token: bool = True, **kwargs) -> Client:
        cfg = config_mod.load()
        if need_token:
            config_mod.require_token(cfg)
        return cls(cfg.url, cfg.token, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- transport ------------------------------------------------------------------------
    def request(self, method: str, path: str, *, params=None, json=None):
        url = path if path.startswith(("http://", "https://")) else f"/api/v1/{path.lstrip('/')}"
        try:
            response = self._http.request(method, url, params=params, json=json)
        except httpx.TimeoutException:
            raise UnavailableError(f"The portal at {self.url} did not answer in time.") from None
        except httpx.HTTPError as exc:
            raise UnavailableError(f"Cannot reach the portal at {self.url}: {exc}.") from None
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = response.text
        if response.status_code < 400:
            if response.content and not isinstance(body, (dict, list)):
                raise UnavailableError(
                    f"{self.url} answered {method} {url} with something that is not the Axle API "
                    "(is it the portal's address?)."
                )
            return body
        message, problems = _message(body)
        status = response.status_code
        if status == 401:
            message = (
                f"The portal at {self.url} refused your credentials ({message or 'unauthorized'}). Run `axle login`."
            )
        elif status == 429:
            message = f"The portal asks to slow down: {message or 'too many requests'}"
        elif status >= 500 and not message:
            message = f"The portal answered {status} to {method} {url}."
        cls = BY_STATUS.get(status, UnavailableError if status >= 429 else AxleError)
        raise cls(message or f"{method} {url}: {status}", status=status, problems=problems, body=body)

    def get(self, path: str, **params):
        return self.request("GET", path, params={k: v for k, v in params.items() if v not in (None, "")})

    def post(self, path: str, body: dict | None = None):
        return self.request("POST", path, json=body if body is not None else {})

    def pages(self, path: str, *, limit: int | None = None, **params) -> list[dict]:
        """Every item of a paged list (`count`/`next`/`results`), up to `limit`."""
        items: list[dict] = []
        page_size = min(limit or 200, 1000)
        body = self.get(path, limit=page_size, **params)
        while True:
            if isinstance(body, list):  # an unpaged list
                items.extend(body)
                break
            items.extend(body.get("results", []))
            if not body.get("next") or (limit and len(items) >= limit):
                break
            body = self.request("GET", body["next"])
        return items[:limit] if limit else items

    # -- who -------------------------------------------------------------------------------
    def me(self) -> dict:
        return self.get("me/")

    def token_obtain(self, *, username: str, password: str, name: str) -> dict:
        return self.post("auth/token/", {"username": username, "password": password, "name": name})

    # -- clusters --------------------------------------------------------------------------
    def clusters(self) -> list[dict]:
        return self.pages("clusters/")

    def cluster(self, name: str) -> dict:
        return self.get(f"clusters/{name}/")

    def _post_to_cluster(self, path: str, body: dict, cluster: str) -> dict:
        """POST what names a cluster; a 404 about the cluster lists the ones the user may use."""
        try:
            return self.post(path, body)
        except NotFoundError as exc:
            if "cluster" in exc.message.lower():
                raise self._unknown_cluster(exc, cluster) from None
            raise

    def _unknown_cluster(self, exc: NotFoundError, cluster: str) -> NotFoundError:
        """'No cluster x' with the names the user may use."""
        try:
            names = [c["name"] for c in self.clusters() if c.get("my_grant")]
        except AxleError:
            return exc
        hint = f" Clusters you hold a grant on: {', '.join(names)}." if names else " You hold no grant on any cluster."
        return NotFoundError(exc.message + hint, status=404, body=exc.body)

    # -- ids -------------------------------------------------------------------------------
    def resolve(self, kind: str, ref: str) -> str:
        """A full id from a full one, a unique prefix of one (as tables show them), or, for
        jobs, a Slurm job id."""
        ref = ref.strip()
        if _UUID.match(ref):
            return str(uuid.UUID(ref))
        if not ref or not re.match(r"^[0-9A-Za-z-]+$", ref):
            raise UsageError(f"{ref!r} is not a {kind} id.")
        path = {"job": "jobs/", "sweep": "sweeps/", "deployment": "deployments/", "pipeline run": "pipeline-runs/"}[
            kind
        ]
        items = self.pages(path, limit=1000)
        matches = []
        if kind == "job" and ref.isdigit():  # a Slurm job id, as squeue and sacct show it
            matches = [i for i in items if str(i.get("slurm_job_id", "")).split("_")[0] == ref]
        if not matches:
            matches = [i for i in items if str(i["id"]).startswith(ref.lower())]
        if not matches:
            raise NotFoundError(f"No {kind} {ref!r}, or not one you may see.")
        if len(matches) > 1:
            listed = ", ".join(str(m["id"])[:13] for m in matches[:5])
            raise UsageError(f"{ref!r} matches {len(matches)} {kind}s ({listed}…): give more of the id.")
        return str(matches[0]["id"])

    # -- jobs ------------------------------------------------------------------------------
    def jobs(self, *, status: str = "", cluster: str = "", limit: int | None = 50) -> list[dict]:
        return self.pages("jobs/", limit=limit, status=status, cluster=cluster)

    def job(self, job_id: str) -> dict:
        return self.get(f"jobs/{job_id}/")

    def job_validate(self, *, cluster: str, script: str, parameters: dict | None = None) -> dict:
        try:
            return self.post("jobs/validate/", {"cluster": cluster, "script": script, "parameters": parameters or {}})
        except NotFoundError as exc:
            raise self._unknown_cluster(exc, cluster) from None

    def job_submit(
        self,
        *,
        cluster: str,
        script: str,
        name: str = "",
        parameters: dict | None = None,
        dataset_versions: list[str] | None = None,
        code: dict | None = None,
        image: str = "",
        register_model_as: str = "",
    ) -> dict:
        body = {"cluster": cluster, "name": name, "script": script, "parameters": parameters or {}}
        if dataset_versions:
            body["dataset_versions"] = dataset_versions
        if code:
            body["code"] = code
        if image:
            body["image"] = image
        if register_model_as:
            body["register_model_as"] = register_model_as
        return self._post_to_cluster("jobs/", body, cluster)

    def job_cancel(self, job_id: str) -> dict:
        return self.post(f"jobs/{job_id}/cancel/")

    def job_logs(self, job_id: str, *, stream: str = "stdout", offset: int = 0) -> dict:
        return self.get(f"jobs/{job_id}/logs/", stream=stream, offset=offset)

    def job_metrics(self, job_id: str) -> dict:
        return self.get(f"jobs/{job_id}/metrics/")

    def job_wait(
        self, job_id: str, *, interval: float = 2.0, timeout: float | None = None, on_change: Callable | None = None
    ) -> dict:
        """Poll until the job has ended; `on_change(job)` hears each new state."""
        deadline = time.monotonic() + timeout if timeout else None
        for job in _poll(partial(self.job, job_id), key=_status_reason, interval=interval, on_change=on_change):
            if job["status"] in JOB_TERMINAL:
                return job
            if deadline and time.monotonic() > deadline:
                raise UnavailableError(f"Job {job_id} has not ended after {timeout:.0f} s (it is {job['status']}).")

    def job_follow(
        self,
        job_id: str,
        *,
        streams: tuple[str, ...] = ("stdout", "stderr"),
        interval: float = 2.0,
        on_change: Callable | None = None,
    ) -> Iterator[tuple[str, str]]:
        """(stream, text) as the job writes it, from the start, until the job has ended and
        its logs are read to their end. The job's state is read before its logs, so once it
        has ended the logs read after it hold everything. `on_change(job)` hears each state."""
        offsets = dict.fromkeys(streams, 0)
        for job in _poll(partial(self.job, job_id), key=_status_reason, interval=interval, on_change=on_change):
            ended = job["status"] in JOB_TERMINAL
            while True:
                got = False
                for stream in streams:
                    try:
                        chunk = self.job_logs(job_id, stream=stream, offset=offsets[stream])
                    except UnavailableError:
                        if ended:
                            raise
                        continue  # the cluster may be back at the next turn
                    if chunk.get("text"):
                        got = True
                        yield stream, chunk["text"]
                    offsets[stream] = max(offsets[stream], int(chunk.get("next_offset") or 0))
                if not (ended and got):
                    break
            if ended:
                self.last_job = job
                return

    # -- sweeps ----------------------------------------------------------------------------
    def sweeps(self, *, status: str = "", limit: int | None = 50) -> list[dict]:
        return self.pages("sweeps/", limit=limit, status=status)

    def sweep(self, sweep_id: str) -> dict:
        return self.get(f"sweeps/{sweep_id}/")

    def sweep_trials(self, sweep_id: str) -> list[dict]:
        return self.get(f"sweeps/{sweep_id}/trials/")

    def sweep_submit(self, *, cluster: str, spec: str, script: str | None = None, team: str | None = None) -> dict:
        body: dict = {"cluster": cluster, "spec": spec, "script": script}
        if team:
            body["team"] = team
        return self._post_to_cluster("sweeps/", body, cluster)

    def sweep_stop(self, sweep_id: str) -> dict:
        return self.post(f"sweeps/{sweep_id}/stop/")

    def sweep_wait(self, sweep_id: str, *, interval: float = 3.0, on_change: Callable | None = None) -> dict:
        for sweep in _poll(partial(self.sweep, sweep_id), key=_status, interval=interval, on_change=on_change):
            if sweep["status"] in SWEEP_TERMINAL:
                return sweep

    # -- pipelines -------------------------------------------------------------------------
    def pipeline_by_name(self, name: str) -> dict:
        found = [p for p in self.pages("pipelines/", name=name) if p.get("name") == name]
        if not found:
            raise NotFoundError(f"No pipeline {name!r}, or not one you may see.")
        return found[0]

    def pipelines(self) -> list[dict]:
        return self.pages("pipelines/")

    def pipeline_run(self, pipeline_id: str, *, commit: str = "", parameters: dict | None = None) -> dict:
        body: dict = {"commit": commit} if commit else {}
        if parameters:
            body["parameters"] = parameters
        return self.post(f"pipelines/{pipeline_id}/run/", body)

    def pipeline_run_get(self, run_id: str) -> dict:
        return self.get(f"pipeline-runs/{run_id}/")

    def pipeline_runs(self, *, pipeline: str = "", status: str = "", limit: int | None = 50) -> list[dict]:
        return self.pages("pipeline-runs/", limit=limit, pipeline=pipeline, status=status)

    def pipeline_run_cancel(self, run_id: str) -> dict:
        return self.post(f"pipeline-runs/{run_id}/cancel/")

    def pipeline_run_retry(self, run_id: str) -> dict:
        return self.post(f"pipeline-runs/{run_id}/retry/")

    def pipeline_run_wait(self, run_id: str, *, interval: float = 3.0, on_change: Callable | None = None) -> dict:
        for run in _poll(partial(self.pipeline_run_get, run_id), key=run_state, interval=interval, on_change=on_change):
            if run_state(run) in PIPELINE_TERMINAL:
                return run

    # -- models ----------------------------------------------------------------------------
    def models(self, *, limit: int | None = 200) -> list[dict]:
        return self.pages("models/", limit=limit)

    def model(self, name: str) -> dict:
        return self.get(f"models/{name}/")

    def model_register(self, name: str, *, job: str) -> dict:
        return self.post(f"models/{name}/versions/", {"job": job})

    # -- serving ---------------------------------------------------------------------------
    def environments(self) -> list[dict]:
        return self.get("environments/")

    def deployments(self, *, status: str = "", environment: str = "", limit: int | None = 50) -> list[dict]:
        return self.pages("deployments/", limit=limit, status=status, environment=environment)

    def deployment(self, deployment_id: str) -> dict:
        return self.get(f"deployments/{deployment_id}/")

    def deployment_request(
        self, *, model: str, version: int, environment: str, reason: str, canary_percent: int | None = None
    ) -> dict:
        body = {"model": model, "version": version, "environment": environment, "reason": reason}
        if canary_percent is not None:
            body["canary_percent"] = canary_percent
        return self.post("deployments/", body)

    def deployment_approve(self, deployment_id: str, *, comment: str = "") -> dict:
        return self.post(f"deployments/{deployment_id}/approve/", {"comment": comment})

    def deployment_reject(self, deployment_id: str, *, comment: str = "") -> dict:
        return self.post(f"deployments/{deployment_id}/reject/", {"comment": comment})

    def deployment_wait(self, deployment_id: str, *, interval: float = 3.0, on_change: Callable | None = None) -> dict:
        read = partial(self.deployment, deployment_id)
        for deployment in _poll(read, key=_status, interval=interval, on_change=on_change):
            if deployment["status"] in DEPLOYMENT_SETTLED:
                return deployment


def run_state(run: dict) -> str:
    """A pipeline run's state, whichever of `state`/`status` it is called."""
    return str(run.get("state") or run.get("status") or "")
