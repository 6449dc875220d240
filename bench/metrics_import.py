#!/usr/bin/env python
"""Metrics import: 10,000 points from a file-based MLflow store into the hub's MLflow server,
through the batched importer versus one `log_metric` call per point.

Set-up: the hub creates a run on its server and bootstraps a file store for it on disk; the
compute Python (/var/lib/axle/venv/bin/python, as a job on a node would) logs 10 metrics x
1,000 steps into it with plain `mlflow.log_metrics`. Then:

- batched: the spool reader (`read_increment`, reading the files as the hub would over the
  cluster's transport) and `import_into`, which sends runs/log-batch bodies of 1,000 points;
- one call per point: the same points into a second run, one runs/log-metric each, the way
  `mlflow.log_metric` in a loop would.

Both runs are checked to hold all 10,000 points. The server must be up
(compose/local/stack.sh up); nothing else is touched.

    .venv/bin/python bench/metrics_import.py [--metrics 10] [--steps 1000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.integrations.mlflow import filestore  # noqa: E402
from apps.integrations.mlflow.client import TrackingClient  # noqa: E402

TRACKING_URI = os.environ.get("AXLE_MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
COMPUTE_PYTHON = os.environ.get("AXLE_COMPUTE_PYTHON", "/var/lib/axle/venv/bin/python")

JOB = textwrap.dedent(
    """
    import sys, mlflow
    metrics, steps = int(sys.argv[1]), int(sys.argv[2])
    with mlflow.start_run():
        mlflow.log_params({"metrics": metrics, "steps": steps})
        for step in range(steps):
            mlflow.log_metrics({f"m{k}": (k + 1) / (step + 1) for k in range(metrics)}, step=step)
    """
)


def local_read(path: str, offset: int) -> tuple[bytes, int]:
    # Capped like the hub's ClusterFiles.read of a file store (1 MiB a call).
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(1 << 20)
    return data, offset + len(data)


def local_list(directory: str) -> dict[str, int]:
    base = Path(directory)
    if not base.is_dir():
        return {}
    return {p.relative_to(base).as_posix(): p.stat().st_size for p in base.rglob("*") if p.is_file()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    total = args.metrics * args.steps

    client = TrackingClient(TRACKING_URI, timeout=60)
    if not client.health():
        print(f"error: the MLflow server at {client.display_uri} does not answer; start compose/local/stack.sh up")
        return 2
    experiment = client.ensure_experiment("axle-bench-metrics-import")
    stamp = time.strftime("%H%M%S")
    batched_run = client.create_run(experiment, f"bench-batched-{stamp}")
    naive_run = client.create_run(experiment, f"bench-one-per-point-{stamp}")

    with tempfile.TemporaryDirectory(prefix="axle-bench-spool-") as tmp:
        root = Path(tmp) / "mlruns"
        filestore.write_files_locally(str(root), filestore.bootstrap_files(experiment, batched_run, "bench", str(root)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(
            MLFLOW_TRACKING_URI=filestore.tracking_uri(str(root)),
            MLFLOW_RUN_ID=batched_run,
            MLFLOW_EXPERIMENT_ID=experiment,
            **filestore.ALLOW_FILE_STORE_ENV,
        )
        (Path(tmp) / "job.py").write_text(JOB)
        t0 = time.perf_counter()
        subprocess.run(
            [COMPUTE_PYTHON, str(Path(tmp) / "job.py"), str(args.metrics), str(args.steps)],
            env=env,
            check=True,
            capture_output=True,
        )
        print(f"spool: {total:,} points written by the compute Python in {time.perf_counter() - t0:.1f} s")

        run_path = filestore.run_dir(str(root), experiment, batched_run)
        client.calls = 0
        t0 = time.perf_counter()
        inc = filestore.read_increment(
            run_path=run_path, read=local_read, list_files=local_list, state=None, final=True
        )
        t_read = time.perf_counter() - t0
        result = filestore.import_into(client, batched_run, inc.points, inc.params, inc.tags)
        t_batched = time.perf_counter() - t0
        batched_calls = client.calls

    points = inc.points
    assert len(points) == total, f"read {len(points)} points, expected {total}"

    client.calls = 0
    t0 = time.perf_counter()
    for point in points:
        client.log_metric(naive_run, point)
    t_naive = time.perf_counter() - t0
    naive_calls = client.calls

    for run in (batched_run, naive_run):
        history = client.metric_history(run, [f"m{k}" for k in range(args.metrics)])
        stored = sum(len(v) for v in history.values())
        assert stored == total, f"run {run} holds {stored} points, expected {total}"

    print(f"server: {client.display_uri}, {total:,} points ({args.metrics} metrics x {args.steps:,} steps)")
    print(
        f"batched import     : {t_batched:7.2f} s  {batched_calls:6,} HTTP calls "
        f"(spool read {t_read:.2f} s, {result.calls} log-batch)  {total / t_batched:9,.0f} points/s"
    )
    print(f"one call per point : {t_naive:7.2f} s  {naive_calls:6,} HTTP calls{'':31}{total / t_naive:9,.0f} points/s")
    print(f"ratio              : {t_naive / t_batched:.1f}x faster, {naive_calls / batched_calls:,.0f}x fewer calls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
