"""The hub's client for an MLflow tracking server.

Tracking calls go to MLflow's REST API directly rather than through `MlflowClient`: the
hub needs one HTTP call per batch, its own timeout, and a fast, typed failure when the
server is down (MlflowClient retries 5xx and connection errors with exponential backoff
for minutes, which would pin a worker). Artifacts of a server that proxies them
(`mlflow-artifacts:` URIs, `mlflow server --serve-artifacts`) use the same session; any
other artifact store (s3://, file://, ...) goes through mlflow's own artifact repositories.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
import secrets
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from .base import (
    ArtifactEntry,
    MetricPoint,
    MlflowError,
    MlflowUnavailable,
    ModelVersionInfo,
    RunInfo,
    RunStatus,
    redact_uri,
)

# MLflow's own limits for runs/log-batch (mlflow/utils/validation.py).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_BATCH_BYTES = 900_000  # the server refuses a request over 1e6 bytes; keep a margin
HISTORY_PAGE = 25_000  # the server's largest get-history page
MAX_ARTIFACT_LISTINGS = 200  # bounds a recursive walk of a run's artifacts


def directory_sha256(root: str | os.PathLike[str]) -> str:
    """A sha256 over a directory's files that depends only on their relative paths and
    contents: sorted POSIX paths, each followed by NUL, its length and its bytes (the
    length prefix keeps "a"+"bc" and "ab"+"c" apart). Timestamps and modes are ignored, so a
    model downloaded twice, or copied from a cluster, hashes the same."""
    base = Path(root)
    files = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for rel in files:
        digest.update(rel.encode() + b"\0")
        digest.update((base / rel).stat().st_size.to_bytes(8, "big"))
        with open(base / rel, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _json_float(value: float) -> float | str:
    # Protobuf's JSON mapping spells these as strings; bare NaN is not JSON.
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _from_json_float(value: Any) -> float:
    return float(value) if not isinstance(value, str) else float(value.replace("Infinity", "inf"))


def pack_batches(
    metrics: Sequence[dict[str, Any]], params: Sequence[dict[str, Any]], tags: Sequence[dict[str, Any]]
) -> list[dict[str, list[dict[str, Any]]]]:
    """Split rows into runs/log-batch bodies within MLflow's limits: at most 1000 entities,
    100 params, 100 tags and under 1 MB each. Params and tags go first so a job's few
    params ride along with its first metrics instead of costing a call of their own."""
    batches: list[dict[str, list[dict[str, Any]]]] = []
    queues = [
        ("params", list(params), MAX_PARAMS_TAGS_PER_BATCH),
        ("tags", list(tags), MAX_PARAMS_TAGS_PER_BATCH),
        ("metrics", list(metrics), MAX_METRICS_PER_BATCH),
    ]
    index = {"params": 0, "tags": 0, "metrics": 0}
    while any(index[name] < len(rows) for name, rows, _ in queues):
        batch: dict[str, list[dict[str, Any]]] = {"metrics": [], "params": [], "tags": []}
        count = size = 0
        for name, rows, cap in queues:
            while index[name] < len(rows) and len(batch[name]) < cap and count < MAX_ENTITIES_PER_BATCH:
                row_size = len(json.dumps(rows[index[name]])) + 2
                # A single row over the byte limit still goes alone: MLflow then says why.
                if count and size + row_size > MAX_BATCH_BYTES:
                    break
                batch[name].append(rows[index[name]])
                index[name] += 1
                count += 1
                size += row_size
            if count and size >= MAX_BATCH_BYTES:
                break
        batches.append(batch)
    return batches


def _kv(items: Iterable[dict[str, Any]] | None) -> dict[str, str]:
    return {i["key"]: i.get("value", "") for i in items or []}


def _model_version(mv: Mapping[str, Any]) -> ModelVersionInfo:
    return ModelVersionInfo(
        name=mv["name"],
        version=str(mv["version"]),
        source=mv.get("source", ""),
        run_id=mv.get("run_id", ""),
        status=mv.get("status", ""),
    )


class TrackingClient:
    """One per thread: it keeps a `requests.Session`, which is not thread-safe."""

    def __init__(
        self,
        tracking_uri: str,
        *,
        timeout: float = 30.0,
        token: str | None = None,
        auth: tuple[str, str] | None = None,
        session: requests.Session | None = None,
    ) -> None:
        """`auth` is a (username, password) pair for a server that runs MLflow's basic-auth
        app; without it, userinfo in the URI or MLflow's own MLFLOW_TRACKING_USERNAME and
        MLFLOW_TRACKING_PASSWORD variables are used, as MLflow's client does."""
        parts = urlsplit(tracking_uri)
        if parts.scheme not in ("http", "https"):
            raise MlflowError(
                f"The hub talks to MLflow over HTTP(S); {redact_uri(tracking_uri)} is not such a URI.", permanent=True
            )
        self.display_uri = redact_uri(tracking_uri)
        host = parts.netloc.rpartition("@")[2]
        self.base_url = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
        self.timeout = timeout
        self.session = session or requests.Session()
        if auth:
            self.session.auth = auth
        elif parts.username:
            self.session.auth = (parts.username, parts.password or "")
        elif os.environ.get("MLFLOW_TRACKING_USERNAME"):
            self.session.auth = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.calls = 0  # HTTP requests made, for benchmarks and tests

    # ------------------------------------------------------------ transport

    def _request(self, method: str, path: str, *, what: str, stream: bool = False, **kwargs: Any) -> requests.Response:
        url = f"{self.base_url}/{path.lstrip('/')}"
        self.calls += 1
        try:
            resp = self.session.request(method, url, timeout=self.timeout, stream=stream, **kwargs)
        except requests.Timeout:
            raise MlflowUnavailable(f"MLflow at {self.display_uri} did not answer {what} within {self.timeout:g}s.")
        except requests.RequestException as exc:
            # The exception text can repeat the URL with its userinfo: never include it.
            raise MlflowUnavailable(
                f"MLflow at {self.display_uri} cannot be reached ({type(exc).__name__}) for {what}."
            )
        if resp.status_code < 400:
            return resp
        code, message = "", resp.text[:500]
        try:
            body = resp.json()
            code, message = body.get("error_code", ""), body.get("message", message)
        except ValueError:
            pass
        if resp.status_code >= 500 or resp.status_code == 429:
            raise MlflowUnavailable(f"MLflow at {self.display_uri} failed {what}: HTTP {resp.status_code} {message}")
        raise MlflowError(f"MLflow refused {what}: {message}", permanent=True, code=code, status=resp.status_code)

    def _json(self, resp: requests.Response, what: str) -> dict[str, Any]:
        """The answer's JSON body; anything else (a proxy's login page, a cut-off body) is an
        MLflow that is not answering as MLflow, not a crash of the caller."""
        try:
            return resp.json()
        except ValueError:
            raise MlflowUnavailable(
                f"MLflow at {self.display_uri} answered {what} with something that is not JSON "
                f"(HTTP {resp.status_code}, {resp.headers.get('Content-Type') or 'no content type'})."
            ) from None

    def _get(self, endpoint: str, what: str, **params: Any) -> dict[str, Any]:
        return self._json(self._request("GET", f"api/2.0/mlflow/{endpoint}", what=what, params=params), what)

    def _post(self, endpoint: str, what: str, body: Mapping[str, Any]) -> dict[str, Any]:
        resp = self._request(
            "POST",
            f"api/2.0/mlflow/{endpoint}",
            what=what,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        return self._json(resp, what) if resp.content else {}

    def _get_or_none(self, endpoint: str, what: str, **params: Any) -> dict[str, Any] | None:
        """`_get`, or None when MLflow answers that the thing does not exist."""
        try:
            return self._get(endpoint, what, **params)
        except MlflowError as exc:
            if exc.code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def health(self) -> bool:
        try:
            return self._request("GET", "health", what="health").ok
        except MlflowError:
            return False

    # ------------------------------------------------------------ experiments and runs

    def ensure_experiment(self, name: str) -> str:
        """The id of experiment `name`, created if missing. Two workers may race to create
        it: the loser gets RESOURCE_ALREADY_EXISTS and reads the winner's id.

        Whoever made the experiment is not checked: not for a team's or a user's experiment,
        whose name any MLflow login could have taken first (`apps.jobs.experiments`)."""
        found = self.experiment_by_name(name)
        if found is not None:
            return found[0]
        try:
            return self.create_experiment(name)
        except MlflowError as exc:
            if exc.code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = self.experiment_by_name(name)
            if found is None:
                raise
        return found[0]

    def create_experiment(self, name: str, tags: Mapping[str, str] | None = None) -> str:
        """The id of a new experiment `name`; MlflowError with code RESOURCE_ALREADY_EXISTS
        when the name is taken (by anyone, deleted experiments included)."""
        body = {"name": name, "tags": [{"key": k, "value": str(v)} for k, v in (tags or {}).items()]}
        return self._post("experiments/create", "creating an experiment", body)["experiment_id"]

    def experiment_by_name(self, name: str) -> tuple[str, dict[str, str]] | None:
        """(id, tags) of experiment `name`, or None when there is none."""
        found = self._get_or_none("experiments/get-by-name", "looking up an experiment", experiment_name=name)
        if found is None:
            return None
        return found["experiment"]["experiment_id"], _kv(found["experiment"].get("tags"))

    def experiment_stage(self, experiment_id: str) -> str | None:
        """The experiment's lifecycle stage ("active", or "deleted" for one in MLflow's bin),
        or None when there is no such experiment (deleted for good)."""
        found = self._get_or_none("experiments/get", "looking up an experiment", experiment_id=experiment_id)
        return None if found is None else found["experiment"].get("lifecycle_stage", "active")

    def restore_experiment(self, experiment_id: str) -> None:
        """Take a deleted experiment out of MLflow's bin, with its runs."""
        self._post("experiments/restore", "restoring an experiment", {"experiment_id": experiment_id})

    def create_run(
        self,
        experiment_id: str,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        *,
        start_time_ms: int | None = None,
    ) -> str:
        body = {
            "experiment_id": experiment_id,
            "run_name": run_name,
            "start_time": start_time_ms or int(time.time() * 1000),
            "tags": [{"key": k, "value": str(v)} for k, v in (tags or {}).items()],
        }
        return self._post("runs/create", "creating a run", body)["run"]["info"]["run_id"]

    def runs_tagged(self, experiment_id: str, key: str, value: str) -> list[tuple[str, str]]:
        """(run id, status) of the runs of an experiment whose tag ``key`` is ``value``,
        oldest first: one search for up to 1,000 (then a page more per 1,000)."""
        return [(run.run_id, run.status) for run in self.runs_tagged_info(experiment_id, key, value)]

    def runs_tagged_info(self, experiment_id: str, key: str, value: str) -> list[RunInfo]:
        """The runs of an experiment whose tag ``key`` is ``value`` (their info and tags),
        oldest first, deleted ones too."""
        return self.runs_with_tags(experiment_id, {key: value}, active_only=False)

    def runs_with_tags(
        self,
        experiment_id: str,
        tags: Mapping[str, str],
        *,
        started_from_ms: int | None = None,
        active_only: bool = True,
        first_only: bool = False,
    ) -> list[RunInfo]:
        """The runs of an experiment that carry every tag of ``tags`` (the filter is MLflow's,
        so no number of other runs hides them), started at ``started_from_ms`` or later if
        given, oldest first: all of them, a page of 1,000 a call, or only the first."""
        clauses = [f"tags.`{key}` = '{_quoted(value)}'" for key, value in tags.items()]
        if started_from_ms is not None:
            clauses.append(f"attributes.start_time >= {int(started_from_ms)}")
        body: dict[str, Any] = {
            "experiment_ids": [experiment_id],
            "filter": " AND ".join(clauses),
            "run_view_type": "ACTIVE_ONLY" if active_only else "ALL",
            "max_results": 1 if first_only else 1000,
            "order_by": ["attributes.start_time ASC"],
        }
        found: list[RunInfo] = []
        while True:
            page = self._post("runs/search", "searching runs", body)
            found.extend(_run_info(run) for run in page.get("runs") or [])
            token = page.get("next_page_token")
            if first_only or not token:
                return found
            body["page_token"] = token

    def terminate(self, run_id: str, status: str, end_time_ms: int | None = None) -> None:
        if status not in RunStatus.TERMINAL:
            raise ValueError(f"{status!r} is not a terminal MLflow run status")
        body = {"run_id": run_id, "status": status, "end_time": end_time_ms or int(time.time() * 1000)}
        self._post("runs/update", "ending a run", body)

    def get_run(self, run_id: str) -> RunInfo:
        return _run_info(self._get("runs/get", "reading a run", run_id=run_id)["run"])

    def delete_run(self, run_id: str) -> None:
        self._post("runs/delete", "deleting a run", {"run_id": run_id})

    # ------------------------------------------------------------ logging, batched

    def log_batch(
        self,
        run_id: str,
        *,
        metrics: Sequence[MetricPoint] = (),
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> int:
        """Log everything in as few runs/log-batch calls as MLflow accepts (1000 entities,
        of which at most 100 params and 100 tags, under 1 MB each). Returns the calls made.

        Identical points (same key, step, timestamp, value) are sent once: MLflow 3's
        log_model re-logs a run's metrics for its LoggedModel, which a file store records
        as a second copy of the line.
        """
        seen: set[tuple[str, int, int, float | str]] = set()
        metric_rows: list[dict[str, Any]] = []
        for p in metrics:
            row = {"key": p.key, "value": _json_float(p.value), "timestamp": int(p.timestamp_ms), "step": int(p.step)}
            ident = (p.key, row["step"], row["timestamp"], row["value"])
            if ident not in seen:
                seen.add(ident)
                metric_rows.append(row)
        param_rows = [{"key": k, "value": str(v)} for k, v in (params or {}).items()]
        tag_rows = [{"key": k, "value": str(v)} for k, v in (tags or {}).items()]

        batches = pack_batches(metric_rows, param_rows, tag_rows)
        for batch in batches:
            self._post("runs/log-batch", "logging to a run", {"run_id": run_id, **batch})
        return len(batches)

    def log_metrics(self, run_id: str, points: Sequence[MetricPoint]) -> int:
        return self.log_batch(run_id, metrics=points)

    def log_params(self, run_id: str, params: Mapping[str, str]) -> int:
        return self.log_batch(run_id, params=params)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> int:
        return self.log_batch(run_id, tags=tags)

    def log_metric(self, run_id: str, point: MetricPoint) -> None:
        """One point, one call: what a naive importer does, kept for the benchmark."""
        body = {
            "run_id": run_id,
            "key": point.key,
            "value": _json_float(point.value),
            "timestamp": point.timestamp_ms,
            "step": point.step,
        }
        self._post("runs/log-metric", "logging a metric", body)

    def metric_history(
        self, run_id: str, keys: Iterable[str] | None = None, *, max_points: int = 100_000
    ) -> dict[str, list[MetricPoint]]:
        """Every point of each metric (all the run's metrics when `keys` is None), sorted by
        step then time, at most `max_points` per key so one runaway metric cannot exhaust
        the hub's memory."""
        if keys is None:
            keys = sorted(self.get_run(run_id).metrics)
        out: dict[str, list[MetricPoint]] = {}
        for key in keys:
            points: list[MetricPoint] = []
            token: str | None = None
            while len(points) < max_points:
                params: dict[str, Any] = {
                    "run_id": run_id,
                    "metric_key": key,
                    "max_results": min(HISTORY_PAGE, max_points - len(points)),
                }
                if token:
                    params["page_token"] = token
                page = self._get("metrics/get-history", "reading a metric's history", **params)
                for m in page.get("metrics", []):
                    points.append(
                        MetricPoint(key, _from_json_float(m["value"]), int(m["timestamp"]), int(m.get("step", 0)))
                    )
                token = page.get("next_page_token")
                if not token:
                    break
            points.sort(key=lambda p: (p.step, p.timestamp_ms))
            out[key] = points[:max_points]
        return out

    def metric_histories(
        self, run_ids: Sequence[str], key: str, *, max_points: int = 1000
    ) -> dict[str, list[MetricPoint]]:
        """Metric `key` of many runs, up to 100 runs per call (MLflow's bulk history), so
        following a sweep's trials costs one call per hundred trials, not one per trial.
        Each run's points sorted by step; at most `max_points` per run (MLflow samples
        evenly beyond that, keeping the first and last)."""
        out: dict[str, list[MetricPoint]] = {run_id: [] for run_id in run_ids}
        ids = list(dict.fromkeys(run_ids))
        for start in range(0, len(ids), 100):
            chunk = ids[start : start + 100]
            page = self._request(
                "GET",
                "ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                what="reading metric histories",
                params={"run_ids": chunk, "metric_key": key, "max_results": max_points},
            ).json()
            for m in page.get("metrics", []):
                out.setdefault(m["run_id"], []).append(
                    MetricPoint(key, _from_json_float(m["value"]), int(m["timestamp"]), int(m.get("step", 0)))
                )
        for points in out.values():
            points.sort(key=lambda p: (p.step, p.timestamp_ms))
        return out

    # ------------------------------------------------------------ artifacts

    def _proxy_path(self, artifact_uri: str) -> str | None:
        """The server-side path of an `mlflow-artifacts:` URI, or None for another scheme."""
        parts = urlsplit(artifact_uri)
        if parts.scheme != "mlflow-artifacts":
            return None
        return parts.path.strip("/")

    def _root_of(self, ref: str) -> tuple[str, str]:
        """(artifact root URI, path inside it) for a run id, `runs:/<id>/<path>`, or
        `models:/<model_id>[/path]`."""
        if ref.startswith("runs:/"):
            run_id, _, path = ref[len("runs:/") :].strip("/").partition("/")
            return self.get_run(run_id).artifact_uri, path
        if ref.startswith("models:/"):
            model_id, _, path = ref[len("models:/") :].strip("/").partition("/")
            if not model_id.startswith("m-"):
                raise MlflowError(
                    f"{ref} names a registered model version; pass the model's models:/m-… URI.", permanent=True
                )
            return self.logged_model(model_id)["artifact_uri"], path
        return self.get_run(ref).artifact_uri, ""

    def _list(self, root: str, path: str) -> list[ArtifactEntry]:
        proxied = self._proxy_path(root)
        prefix = path.strip("/")
        if proxied is not None:
            full = posixpath.join(proxied, prefix) if prefix else proxied
            resp = self._request(
                "GET", "api/2.0/mlflow-artifacts/artifacts", what="listing artifacts", params={"path": full}
            )
            files = resp.json().get("files", [])
            return [
                ArtifactEntry(
                    path=posixpath.join(prefix, f["path"]) if prefix else f["path"],
                    is_dir=bool(f.get("is_dir")),
                    size=int(f["file_size"]) if f.get("file_size") is not None else None,
                )
                for f in files
            ]
        repo = self._repository(root)
        try:
            return [ArtifactEntry(a.path, a.is_dir, a.file_size) for a in repo.list_artifacts(prefix or None)]
        except Exception as exc:  # mlflow's repositories raise anything from boto to OSError
            raise MlflowUnavailable(f"Listing artifacts under {redact_uri(root)} failed: {type(exc).__name__}")

    def _repository(self, root: str) -> Any:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        return get_artifact_repository(root)

    def _walk(self, root: str, path: str) -> list[ArtifactEntry]:
        files: list[ArtifactEntry] = []
        pending, listings = [path], 0
        while pending:
            listings += 1
            if listings > MAX_ARTIFACT_LISTINGS:
                raise MlflowError(f"More than {MAX_ARTIFACT_LISTINGS} artifact folders under {path or '/'}.", True)
            for entry in self._list(root, pending.pop()):
                (pending.append(entry.path) if entry.is_dir else files.append(entry))
        return files

    def list_artifacts(self, run_id: str, path: str = "") -> list[ArtifactEntry]:
        """One level of a run's artifacts (or of `runs:/…`, `models:/m-…`)."""
        root, base = self._root_of(run_id)
        return self._list(root, posixpath.join(base, path).strip("/") if path else base)

    def download_artifact(self, run_id: str, path: str, dst: str | os.PathLike[str]) -> str:
        """Download a file or a whole folder of artifacts into `dst`; returns the local path."""
        root, base = self._root_of(run_id)
        rel = posixpath.join(base, path).strip("/") if path else base
        return self._download(root, rel, Path(dst))

    def _download(self, root: str, rel: str, dst: Path) -> str:
        proxied = self._proxy_path(root)
        dst.mkdir(parents=True, exist_ok=True)
        if proxied is None:
            try:
                return self._repository(root).download_artifacts(rel, str(dst))
            except Exception as exc:
                raise MlflowUnavailable(f"Downloading {rel} from {redact_uri(root)} failed: {type(exc).__name__}")
        entries = self._list(root, rel)
        single = len(entries) == 1 and not entries[0].is_dir and entries[0].path == rel
        if single or (not entries and rel):
            # Listing a file's own path answers nothing or itself: fetch it as a file.
            target = dst / posixpath.basename(rel)
            self._fetch(proxied, rel, target)
            return str(target)
        top = dst / posixpath.basename(rel) if rel else dst
        for entry in self._walk(root, rel):
            local = top / posixpath.relpath(entry.path, rel or ".")
            local.parent.mkdir(parents=True, exist_ok=True)
            self._fetch(proxied, entry.path, local)
        return str(top)

    def _fetch(self, proxied: str, rel: str, local: Path) -> None:
        url = f"api/2.0/mlflow-artifacts/artifacts/{quote(posixpath.join(proxied, rel))}"
        resp = self._request("GET", url, what=f"downloading artifact {rel}", stream=True)
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(local, "wb") as fh:
                for chunk in resp.iter_content(1 << 20):
                    fh.write(chunk)
        except requests.RequestException:
            raise MlflowUnavailable(f"The download of {rel} from {self.display_uri} broke off.")
        finally:
            resp.close()

    def log_artifacts(self, run_id: str, local_dir: str | os.PathLike[str], artifact_path: str = "") -> int:
        """Upload a local folder into the run's artifacts under `artifact_path`; returns files sent."""
        root = self.get_run(run_id).artifact_uri
        return self._upload(root, Path(local_dir), artifact_path.strip("/"))

    def _upload(self, root: str, local_dir: Path, artifact_path: str) -> int:
        proxied = self._proxy_path(root)
        if proxied is None:
            try:
                self._repository(root).log_artifacts(str(local_dir), artifact_path or None)
            except Exception as exc:
                raise MlflowUnavailable(f"Uploading to {redact_uri(root)} failed: {type(exc).__name__}")
            return sum(1 for p in local_dir.rglob("*") if p.is_file())
        sent = 0
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            rel = posixpath.join(artifact_path, path.relative_to(local_dir).as_posix()).strip("/")
            with open(path, "rb") as fh:
                self._request(
                    "PUT",
                    f"api/2.0/mlflow-artifacts/artifacts/{quote(posixpath.join(proxied, rel))}",
                    what=f"uploading artifact {rel}",
                    data=fh,
                )
            sent += 1
        return sent

    # ------------------------------------------------------------ models

    def logged_model(self, model_id: str) -> dict[str, Any]:
        """MLflow 3's LoggedModel `model_id` as the server describes it (its `info`)."""
        return self._get(f"logged-models/{quote(model_id)}", "reading a logged model")["model"]["info"]

    def find_logged_model(self, run_id: str) -> str | None:
        """The URI of the MLflow model the run logged last, or None.

        MLflow 3 (`mlflow.sklearn.log_model(m, name="model")`) makes a LoggedModel
        `m-<hex>` in the run's experiment, stores the model under
        `<experiment>/models/m-<hex>/artifacts` - not in the run's artifacts, which stay
        empty - and records it in the run's `outputs.model_outputs`. Such a model is
        returned as ``models:/m-<hex>``. A model directory inside the run's own artifacts
        (MLflow 2, `log_artifacts` of a saved model, or one the hub imported from a file
        store) is returned as ``runs:/<run_id>/<path>``. Either form is accepted by
        `download_artifact`, `model_sha256` and `register_model`.
        """
        run = self.get_run(run_id)
        for model_id in reversed(run.model_ids):
            try:
                info = self.logged_model(model_id)
            except MlflowError as exc:
                if exc.permanent:
                    continue  # deleted since
                raise
            # A model whose log_model crashed midway stays PENDING without an MLmodel.
            if info.get("status") in ("LOGGED_MODEL_READY", "READY") or any(
                e.path == "MLmodel" for e in self._list(info["artifact_uri"], "")
            ):
                return f"models:/{model_id}"
        # Breadth first, so the shallowest model wins; bounded like any walk of a run.
        pending, listings = [""], 0
        while pending and listings < MAX_ARTIFACT_LISTINGS:
            path = pending.pop(0)
            listings += 1
            entries = self._list(run.artifact_uri, path)
            if any(not e.is_dir and posixpath.basename(e.path) == "MLmodel" for e in entries):
                return f"runs:/{run_id}/{path}".rstrip("/")
            pending.extend(sorted(e.path for e in entries if e.is_dir))
        return None

    def model_sha256(self, model_uri: str) -> str:
        """`directory_sha256` of the model at `model_uri` (`models:/m-…`, `runs:/<id>/<path>`)."""
        with tempfile.TemporaryDirectory(prefix="axle-model-") as tmp:
            local = self.download_artifact(model_uri, "", Path(tmp) / "model")
            return directory_sha256(local)

    def model_input_example(self, model_uri: str) -> dict | None:
        """The model's own example request (see examples.serving_example), read from its
        MLmodel file and the example file it names; None when the model names none."""
        from .examples import MAX_EXAMPLE_BYTES, ExampleUnreadable, serving_example

        with tempfile.TemporaryDirectory(prefix="axle-example-") as tmp:

            def read(path: str) -> bytes:
                if posixpath.isabs(path) or ".." in path.split("/"):
                    raise ExampleUnreadable(f"MLmodel names {path!r}, outside the model's folder.")
                local = self.download_artifact(model_uri, path, Path(tmp) / secrets.token_hex(4))
                with open(local, "rb") as fh:
                    return fh.read(MAX_EXAMPLE_BYTES + 1)

            try:
                return serving_example(read("MLmodel").decode("utf-8", "replace"), read)
            except ExampleUnreadable as exc:
                raise MlflowError(f"The model's input example cannot be read: {exc}", permanent=True) from None

    def artifact_uri(self, ref: str) -> str:
        """The storage URI behind a run id, `runs:/<id>/<path>` or `models:/m-…[/path]`."""
        root, path = self._root_of(ref)
        return f"{root.rstrip('/')}/{path}" if path else root

    def search_model_versions(self, name: str, run_id: str | None = None) -> list[ModelVersionInfo]:
        """The versions of registered model `name` (made from `run_id`, if given), oldest
        first. Lets a retried registration find the version an attempt that died made."""
        # MLflow's filter grammar takes either quote and has no escape for it.
        quote_char = '"' if "'" in name else "'"
        filter_ = f"name={quote_char}{name}{quote_char}" + (f" and run_id='{run_id}'" if run_id else "")
        versions: list[ModelVersionInfo] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"filter": filter_, "max_results": 200}
            if token:
                params["page_token"] = token
            page = self._get("model-versions/search", "searching model versions", **params)
            versions.extend(_model_version(mv) for mv in page.get("model_versions", []))
            token = page.get("next_page_token")
            if not token:
                break
        return sorted(versions, key=lambda v: int(v.version))

    def create_registered_model(self, name: str, tags: Mapping[str, str] | None = None) -> None:
        """A new registered model `name`; MlflowError with code RESOURCE_ALREADY_EXISTS when
        the name is taken."""
        body = {"name": name, "tags": [{"key": k, "value": str(v)} for k, v in (tags or {}).items()]}
        self._post("registered-models/create", "creating a registered model", body)

    def registered_model_tags(self, name: str) -> dict[str, str] | None:
        """The tags of registered model `name`, or None when there is none."""
        found = self.registered_model(name)
        return None if found is None else found[0]

    def registered_model(self, name: str) -> tuple[dict[str, str], int] | None:
        """(tags, creation time in ms) of registered model `name`, or None when there is none."""
        found = self._get_or_none("registered-models/get", "looking up a registered model", name=name)
        if found is None:
            return None
        model = found["registered_model"]
        return _kv(model.get("tags")), int(model.get("creation_timestamp") or 0)

    def model_version_created(self, name: str, version: str) -> int | None:
        """When version `version` of registered model `name` was made (ms), None if it was not."""
        found = self._get_or_none("model-versions/get", "looking up a model version", name=name, version=version)
        if found is None:
            return None
        return int(found["model_version"].get("creation_timestamp") or 0)

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        body = {"name": name, "key": key, "value": value}
        self._post("registered-models/set-tag", "tagging a registered model", body)

    def register_model(self, name: str, source: str, run_id: str) -> ModelVersionInfo:
        """A new version of registered model `name` (created if missing) from `source`, a
        `models:/m-…` or `runs:/<id>/<path>` URI as `find_logged_model` returns. The hub's
        registry first makes sure the name is its own (`apps.registry.ownership`)."""
        try:
            self.create_registered_model(name)
        except MlflowError as exc:
            if exc.code != "RESOURCE_ALREADY_EXISTS":
                raise
        body: dict[str, Any] = {"name": name, "source": source, "run_id": run_id}
        if source.startswith("models:/m-"):
            # As mlflow.register_model does: the registry links the version to the LoggedModel.
            body["model_id"] = source[len("models:/") :].split("/", 1)[0]
        elif source.startswith("runs:/"):
            root, path = self._root_of(source)
            body["source"] = f"{root.rstrip('/')}/{path}" if path else root
        return _model_version(self._post("model-versions/create", "registering a model version", body)["model_version"])


def _quoted(value: str) -> str:
    """``value`` inside single quotes of an MLflow search filter."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _run_info(run: dict[str, Any]) -> RunInfo:
    info, data = run["info"], run.get("data", {})
    metrics = {
        m["key"]: MetricPoint(m["key"], _from_json_float(m["value"]), int(m["timestamp"]), int(m.get("step", 0)))
        for m in data.get("metrics", [])
    }
    outputs = run.get("outputs", {}).get("model_outputs", [])
    # Latest step last, so the model a run logged last is model_ids[-1].
    model_ids = tuple(o["model_id"] for o in sorted(outputs, key=lambda o: int(o.get("step", 0))))
    return RunInfo(
        run_id=info["run_id"],
        experiment_id=info["experiment_id"],
        status=info["status"],
        start_time=int(info["start_time"]) if info.get("start_time") else None,
        end_time=int(info["end_time"]) if info.get("end_time") else None,
        params=_kv(data.get("params")),
        tags=_kv(data.get("tags")),
        metrics=metrics,
        artifact_uri=info.get("artifact_uri", ""),
        run_name=info.get("run_name", ""),
        model_ids=model_ids,
        user_id=info.get("user_id", ""),
    )
