"""MLflow's file store as a spool for clusters whose compute nodes cannot reach the hub.

The hub creates the run on its own server, then writes the few files below into the job's
folder on the cluster so that the user's unchanged `mlflow` code, pointed at
``file://<jobdir>/mlruns`` with ``MLFLOW_RUN_ID`` and ``MLFLOW_EXPERIMENT_ID``, *resumes* that
same run id instead of inventing a new one. While the job runs the hub reads what was
appended since last time (over the cluster's transport, through the two callables it
passes in) and imports it in batches.

Layout of a run, as FileStore (mlflow 3.x) writes it, relative to the mlruns root::

    <exp>/meta.yaml                       experiment
    <exp>/<run>/meta.yaml                 run info (status as an int enum)
    <exp>/<run>/metrics/<key>             lines "timestamp value step[ dataset digest]"
    <exp>/<run>/params/<key>              the value, whole file
    <exp>/<run>/tags/<key>                the value, whole file (overwritten by set_tag)
    <exp>/<run>/outputs/<model_id>/...    the LoggedModels this run produced
    <exp>/models/<model_id>/meta.yaml     a LoggedModel (MLflow 3)
    <exp>/models/<model_id>/artifacts/    the model directory (MLmodel, ...)

Keys may hold "/" and then live in subfolders, so listings are recursive.

Framework-free and, apart from `import_into`, pure: no I/O of its own.
"""

from __future__ import annotations

import posixpath
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml

from .base import MetricPoint, MlflowError, RunInfo

# read(path, offset) -> (bytes from offset on, offset after them). May return fewer bytes
# than are there (a transport caps one read); returns b"" at the end of the file.
ReadFn = Callable[[str, int], tuple[bytes, int]]
# list_files(dir) -> the files beneath dir, recursively, as paths relative to it; either
# names alone or a mapping name -> size in bytes (one `find -printf '%P\t%s\n'` gives
# both). Sizes let the reader skip unchanged files without a read. A missing dir is empty.
ListFn = Callable[[str], Iterable[str] | Mapping[str, int]]

_RUN_STATUS_RUNNING = 1  # mlflow.entities.RunStatus.RUNNING, as meta.yaml stores it
_SOURCE_TYPE_LOCAL = 4
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]+$")

# Tags the hub owns on its own run; the job's copy would only repeat or contradict them.
HUB_OWNED_TAGS = frozenset({"mlflow.runName"})

ALLOW_FILE_STORE_ENV = {"MLFLOW_ALLOW_FILE_STORE": "true"}
"""MLflow >= 3.7 refuses a file store unless this is set: the job's environment needs it."""


def _check_id(kind: str, value: str) -> str:
    # Ids become path components on the cluster: nothing may climb out of the job folder.
    if not _SAFE_ID.match(value):
        raise ValueError(f"{kind} {value!r} is not a plain MLflow id")
    return value


def _file_uri(path: str) -> str:
    if path.startswith("file:"):
        return path.rstrip("/")
    if not path.startswith("/"):
        raise ValueError(f"the artifact root must be an absolute path on the cluster, not {path!r}")
    return "file://" + posixpath.normpath(path)


def tracking_uri(mlruns_dir: str) -> str:
    """The MLFLOW_TRACKING_URI a job uses for the spool at `mlruns_dir` (absolute)."""
    return _file_uri(mlruns_dir)


def bootstrap_files(
    experiment_id: str,
    run_id: str,
    run_name: str,
    artifact_root: str,
    *,
    experiment_name: str | None = None,
    start_time_ms: int | None = None,
    user_id: str = "",
) -> dict[str, bytes]:
    """The files, relative to the mlruns root, that make the job's `mlflow.start_run()`
    resume `run_id` in experiment `experiment_id` of a file store.

    `artifact_root` is the mlruns root as seen on the cluster (an absolute path or a
    file:// URI); the hub writes the returned files beneath it before submitting. A key
    ending in "/" (with empty bytes) is a directory to create: FileStore only recognises a
    run folder that already holds metrics/, params/ and artifacts/ (a guard against
    meta.yaml files planted inside artifacts). FileStore skips creating its Default
    experiment when the root already exists, so nothing else is needed.
    """
    _check_id("experiment id", experiment_id)
    _check_id("run id", run_id)
    root = _file_uri(artifact_root)
    now = int(time.time() * 1000)
    start = now if start_time_ms is None else start_time_ms
    experiment = {
        "artifact_location": f"{root}/{experiment_id}",
        "creation_time": start,
        "experiment_id": experiment_id,
        "last_update_time": start,
        "lifecycle_stage": "active",
        "name": experiment_name or f"axle-{experiment_id}",
    }
    run = {
        "artifact_uri": f"{root}/{experiment_id}/{run_id}/artifacts",
        "end_time": None,
        "entry_point_name": "",
        "experiment_id": experiment_id,
        "lifecycle_stage": "active",
        "run_id": run_id,
        "run_name": run_name,
        "run_uuid": run_id,
        "source_name": "",
        "source_type": _SOURCE_TYPE_LOCAL,
        "source_version": "",
        "start_time": start,
        "status": _RUN_STATUS_RUNNING,
        "tags": [],
        "user_id": user_id,
    }
    return {
        f"{experiment_id}/meta.yaml": yaml.safe_dump(experiment, sort_keys=True).encode(),
        f"{experiment_id}/{run_id}/meta.yaml": yaml.safe_dump(run, sort_keys=True).encode(),
        f"{experiment_id}/{run_id}/tags/mlflow.runName": run_name.encode(),
        f"{experiment_id}/{run_id}/metrics/": b"",
        f"{experiment_id}/{run_id}/params/": b"",
        f"{experiment_id}/{run_id}/artifacts/": b"",
    }


def write_files_locally(root: str, files: Mapping[str, bytes]) -> None:
    """Lay `bootstrap_files` out under a local folder (tests, the bench, one-machine use);
    the hub does the same over SSH on a real cluster."""
    import os

    for rel, data in files.items():
        path = os.path.join(root, rel)
        if rel.endswith("/"):
            os.makedirs(path, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)


def run_dir(mlruns_dir: str, experiment_id: str, run_id: str) -> str:
    return posixpath.join(mlruns_dir, _check_id("experiment id", experiment_id), _check_id("run id", run_id))


# ---------------------------------------------------------------- incremental reading


@dataclass
class Increment:
    """What appeared in a run's spool since the state it was read from."""

    points: list[MetricPoint] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    malformed: list[str] = field(default_factory=list)  # "key: line", skipped, never fatal

    def __bool__(self) -> bool:
        return bool(self.points or self.params or self.tags)


def new_state() -> dict[str, Any]:
    """The state before anything was read. JSON-serialisable, so the hub can store it."""
    return {"metrics": {}, "params": [], "tags": {}}


def _listing(list_files: ListFn, directory: str) -> dict[str, int | None]:
    found = list_files(directory)
    if isinstance(found, Mapping):
        return {name: int(size) for name, size in found.items()}
    return {name: None for name in found}


def _read_all(read: ReadFn, path: str, offset: int, size: int | None) -> tuple[bytes, int]:
    """Bytes from `offset` to the end, over as many capped reads as it takes."""
    chunks: list[bytes] = []
    while size is None or offset < size:
        data, new_offset = read(path, offset)
        if not data:
            break
        chunks.append(data)
        offset = new_offset
    return b"".join(chunks), offset


def parse_metric_line(key: str, line: str) -> MetricPoint:
    """One line of a FileStore metric file: "ts value step", "ts value" (old), or
    "ts value step dataset_name dataset_digest" (metrics logged against a dataset)."""
    parts = line.split()
    if len(parts) not in (2, 3, 5):
        raise ValueError(f"{len(parts)} fields")
    value = float(parts[1])  # Python writes nan/inf/-inf, which float() reads back
    step = int(parts[2]) if len(parts) >= 3 else 0
    return MetricPoint(key=key, value=value, timestamp_ms=int(parts[0]), step=step)


def read_increment(
    *,
    run_path: str,
    read: ReadFn,
    list_files: ListFn,
    state: Mapping[str, Any] | None = None,
    final: bool = False,
) -> Increment:
    """Metric points, params and tags written to the run at `run_path` since `state`.

    A metric file's last line without its newline is being written right now: it is left
    for the next call (its offset is not advanced past it). Params are immutable in MLflow,
    so each is read once. Tags may be overwritten; a tag is read again when its size changed,
    and every tag is read again when `final` (the job is over), which catches a same-size
    overwrite. The input `state` is not modified.
    """
    old = state or new_state()
    offsets: dict[str, int] = dict(old.get("metrics", {}))
    seen_params: set[str] = set(old.get("params", []))
    seen_tags: dict[str, list[Any]] = {k: list(v) for k, v in old.get("tags", {}).items()}
    out = Increment()

    for key, size in sorted(_listing(list_files, posixpath.join(run_path, "metrics")).items()):
        offset = offsets.get(key, 0)
        if size is not None and size <= offset:
            continue
        data, _ = _read_all(read, posixpath.join(run_path, "metrics", key), offset, size)
        complete = data.rfind(b"\n") + 1
        for raw in data[:complete].decode("utf-8", "replace").splitlines():
            if not raw.strip():
                continue
            try:
                out.points.append(parse_metric_line(key, raw))
            except ValueError:
                out.malformed.append(f"{key}: {raw[:200]}")
        offsets[key] = offset + complete  # a partial tail is read again next time

    for key, _size in sorted(_listing(list_files, posixpath.join(run_path, "params")).items()):
        if key in seen_params:
            continue
        data, _ = _read_all(read, posixpath.join(run_path, "params", key), 0, _size)
        out.params[key] = data.decode("utf-8", "replace")
        seen_params.add(key)

    for key, size in sorted(_listing(list_files, posixpath.join(run_path, "tags")).items()):
        if key in HUB_OWNED_TAGS:
            continue
        previous = seen_tags.get(key)
        if previous is not None and not final and size is not None and previous[0] == size:
            continue
        data, _ = _read_all(read, posixpath.join(run_path, "tags", key), 0, size)
        value = data.decode("utf-8", "replace")
        if previous is None or previous[1] != value:
            out.tags[key] = value
        seen_tags[key] = [len(data) if size is None else size, value]

    out.state = {"metrics": offsets, "params": sorted(seen_params), "tags": seen_tags}
    return out


# ---------------------------------------------------------------- models in the spool


@dataclass(frozen=True)
class SpooledModel:
    model_id: str
    name: str
    artifact_dir: str  # the model directory (holding MLmodel) on the cluster


def find_models(
    *, mlruns_dir: str, experiment_id: str, run_id: str, list_files: ListFn, read: ReadFn
) -> list[SpooledModel]:
    """The MLflow 3 LoggedModels that `run_id` produced in the spool, complete ones only.

    MLflow 3 no longer puts a logged model under the run's artifacts: it becomes a
    LoggedModel in ``<exp>/models/m-…/artifacts`` and the run only records it as an output
    (``<run>/outputs/m-…``). An MLflow 2 style model (``mlflow.log_artifacts`` of a saved
    model, or an old client) sits in the run's own artifacts and is found there instead.
    """
    rpath = run_dir(mlruns_dir, experiment_id, run_id)
    found: list[SpooledModel] = []
    model_ids = sorted({name.split("/", 1)[0] for name in _listing(list_files, posixpath.join(rpath, "outputs"))})
    for model_id in model_ids:
        if not model_id.startswith("m-") or not _SAFE_ID.match(model_id):
            continue
        model_root = posixpath.join(mlruns_dir, experiment_id, "models", model_id)
        files = _listing(list_files, model_root)
        if "artifacts/MLmodel" not in files:
            continue  # log_model died before writing the model, or is still writing it
        name = model_id
        if "meta.yaml" in files:
            meta = yaml.safe_load(_read_all(read, posixpath.join(model_root, "meta.yaml"), 0, files["meta.yaml"])[0])
            if isinstance(meta, dict) and meta.get("name"):
                name = str(meta["name"])
        found.append(SpooledModel(model_id=model_id, name=name, artifact_dir=posixpath.join(model_root, "artifacts")))
    for rel in sorted(_listing(list_files, posixpath.join(rpath, "artifacts"))):
        if rel == "MLmodel" or rel.endswith("/MLmodel"):
            sub = posixpath.dirname(rel)
            found.append(
                SpooledModel(model_id="", name=sub or "model", artifact_dir=posixpath.join(rpath, "artifacts", sub))
            )
    return found


# ---------------------------------------------------------------- import


class _Importer(Protocol):
    def log_batch(
        self,
        run_id: str,
        *,
        metrics: Sequence[MetricPoint] = ...,
        params: Mapping[str, str] | None = ...,
        tags: Mapping[str, str] | None = ...,
    ) -> int: ...

    def get_run(self, run_id: str) -> RunInfo: ...


@dataclass(frozen=True)
class ImportResult:
    calls: int  # runs/log-batch (and get) requests made
    points: int
    # Params the job logged with another value than the hub's run already had: MLflow
    # never changes a param, so the hub's value stays and the job's is reported here.
    conflicts: dict[str, tuple[str, str]] = field(default_factory=dict)


def import_into(
    client: _Importer,
    run_id: str,
    points: Sequence[MetricPoint],
    params: Mapping[str, str],
    tags: Mapping[str, str],
) -> ImportResult:
    """Log an increment into the hub's run in as few calls as MLflow's limits allow.

    Safe to repeat: the server keeps one copy of an identical metric point and accepts a
    param logged again with the same value, so an import interrupted after some batches
    is simply done again from the previous state.
    """
    try:
        calls = client.log_batch(run_id, metrics=points, params=params, tags=tags)
        return ImportResult(calls=calls, points=len(points))
    except MlflowError as exc:
        # One conflicting param makes MLflow refuse the whole batch, metrics included.
        if exc.code != "INVALID_PARAMETER_VALUE" or not params:
            raise
    existing = client.get_run(run_id).params
    conflicts = {k: (existing[k], v) for k, v in params.items() if k in existing and existing[k] != v}
    fresh = {k: v for k, v in params.items() if k not in existing}
    calls = client.log_batch(run_id, metrics=points, params=fresh, tags=tags)
    return ImportResult(calls=calls + 2, points=len(points), conflicts=conflicts)
