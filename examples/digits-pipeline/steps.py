"""The digits pipeline's steps: `python steps.py prepare|train|evaluate|register`.

Folders come from the environment Axle sets for each step: OUTPUT_<NAME> for what the step
writes, INPUT_<NAME> for another step's output it reads. Logging goes to the step's job's
MLflow run: the one the hub opened (MLFLOW_RUN_ID) when it made it before sbatch, else one made
here as `mlflow.start_run()` makes it (in MLFLOW_EXPERIMENT_ID, with MLFLOW_RUN_CONTEXT's tags,
by which the hub finds it).

The steps are kept small, since `./dev up` waits for this pipeline: train and evaluate log
their few numbers in one call of MLflow's REST API (`runs/log-batch`, with the standard
library) instead of importing the mlflow package (20 s of a loaded machine's time each);
only register, which logs the model in MLflow's format, imports it."""

import base64
import csv
import json
import os
import pickle
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np


def log_batch(*, params: dict | None = None, metrics: list[tuple[str, float, int]] = ()) -> None:
    """Params and metrics into the step's MLflow run, in one request (as mlflow's own
    log_batch does). A file-store URI (a cluster whose nodes cannot reach MLflow) goes
    through mlflow itself."""
    uri = os.environ["MLFLOW_TRACKING_URI"]
    if not uri.startswith(("http://", "https://")):
        import mlflow

        with mlflow.start_run():
            mlflow.log_params(params or {})
            for key, value, step in metrics:
                mlflow.log_metric(key, value, step=step)
        return
    now = int(time.time() * 1000)
    body = {
        "run_id": os.environ.get("MLFLOW_RUN_ID") or _create_run(uri),
        "params": [{"key": k, "value": str(v)} for k, v in (params or {}).items()],
        "metrics": [{"key": k, "value": v, "timestamp": now, "step": s} for k, v, s in metrics],
    }
    _post(uri, "runs/log-batch", body)


def _create_run(uri: str) -> str:
    """The step's run, made as `mlflow.start_run()` makes it: in the job's experiment, with the
    tags the hub put in MLFLOW_RUN_CONTEXT (its `mlflow.user` is the run's user)."""
    tags = json.loads(os.environ.get("MLFLOW_RUN_CONTEXT") or "{}")
    body = {
        "experiment_id": os.environ["MLFLOW_EXPERIMENT_ID"],
        "start_time": int(time.time() * 1000),
        "user_id": tags.get("mlflow.user", ""),
        "tags": [{"key": k, "value": str(v)} for k, v in tags.items()],
    }
    run_id = _post(uri, "runs/create", body)["run"]["info"]["run_id"]
    os.environ["MLFLOW_RUN_ID"] = run_id  # one run for the step, however often it logs
    return run_id


def _post(uri: str, endpoint: str, body: dict) -> dict:
    request = urllib.request.Request(
        uri.rstrip("/") + "/api/2.0/mlflow/" + endpoint,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - the hub's MLflow
        return json.loads(answer.read() or b"{}")


def load(folder: str):
    with open(Path(folder) / "digits.csv", newline="") as f:
        rows = list(csv.reader(f))
    data = np.array([[float(v) for v in row[:-1]] for row in rows[1:]]) / 16.0
    return data, np.array([int(row[-1]) for row in rows[1:]])


def split(folder: str):
    from sklearn.model_selection import train_test_split

    X, y = load(folder)
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def prepare() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = Path(os.environ["OUTPUT_DATA"])
    with open(out / "digits.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"p{i}" for i in range(digits.data.shape[1])] + ["label"])
        for row, label in zip(digits.data, digits.target, strict=True):
            writer.writerow([int(v) for v in row] + [int(label)])
    print(f"wrote {len(digits.target)} images to {out}")


def train() -> None:
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import accuracy_score

    X_train, X_val, y_train, y_val = split(os.environ["INPUT_DATA"])
    epochs, rate = int(os.environ.get("EPOCHS", "10")), float(os.environ.get("LEARNING_RATE", "0.01"))
    model = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=rate, random_state=0)
    curve = []
    for epoch in range(1, epochs + 1):
        model.partial_fit(X_train, y_train, classes=np.arange(10))
        curve.append(("val_accuracy", float(accuracy_score(y_val, model.predict(X_val))), epoch))
    log_batch(params={"epochs": epochs, "learning_rate": rate}, metrics=curve)
    with open(Path(os.environ["OUTPUT_MODEL"]) / "model.pkl", "wb") as f:
        pickle.dump(model, f)
    print(f"trained {epochs} epochs")


def evaluate() -> None:
    from sklearn.metrics import accuracy_score

    _, X_val, _, y_val = split(os.environ["INPUT_DATA"])
    with open(Path(os.environ["INPUT_MODEL"]) / "model.pkl", "rb") as f:
        model = pickle.load(f)  # noqa: S301 - the pipeline's own train step wrote it
    accuracy = float(accuracy_score(y_val, model.predict(X_val)))
    log_batch(metrics=[("accuracy", accuracy, 0)])
    (Path(os.environ["OUTPUT_REPORT"]) / "report.json").write_text(json.dumps({"accuracy": accuracy}) + "\n")
    print(f"accuracy {accuracy:.4f}")


def register() -> None:
    import mlflow
    import mlflow.sklearn

    report = json.loads((Path(os.environ["INPUT_REPORT"]) / "report.json").read_text())
    if report["accuracy"] < float(os.environ.get("MIN_ACCURACY", "0")):
        sys.exit(f"accuracy {report['accuracy']:.4f} is below {os.environ['MIN_ACCURACY']}: not registered")
    with open(Path(os.environ["INPUT_MODEL"]) / "model.pkl", "rb") as f:
        model = pickle.load(f)  # noqa: S301
    import sklearn

    with mlflow.start_run():
        mlflow.log_metric("accuracy", report["accuracy"])
        # Requirements given, not inferred: inferring them re-imports the model in a subprocess.
        mlflow.sklearn.log_model(model, name="model", pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
    print("logged the model; the hub registers it as the step's register_model")


if __name__ == "__main__":
    {"prepare": prepare, "train": train, "evaluate": evaluate, "register": register}[sys.argv[1]]()
