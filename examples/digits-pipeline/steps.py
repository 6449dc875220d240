"""The digits pipeline's steps: `python steps.py prepare|train|evaluate|register`.

Folders come from the environment Axle sets for each step: OUTPUT_<NAME> for what the step
writes, INPUT_<NAME> for another step's output it reads. Logging goes to the MLflow run the
hub opened for the step's job (MLFLOW_RUN_ID), with plain mlflow."""

import csv
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np


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
    import mlflow
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import accuracy_score

    X_train, X_val, y_train, y_val = split(os.environ["INPUT_DATA"])
    epochs, rate = int(os.environ.get("EPOCHS", "10")), float(os.environ.get("LEARNING_RATE", "0.01"))
    model = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=rate, random_state=0)
    with mlflow.start_run():
        mlflow.log_params({"epochs": epochs, "learning_rate": rate})
        for epoch in range(1, epochs + 1):
            model.partial_fit(X_train, y_train, classes=np.arange(10))
            mlflow.log_metric("val_accuracy", accuracy_score(y_val, model.predict(X_val)), step=epoch)
    with open(Path(os.environ["OUTPUT_MODEL"]) / "model.pkl", "wb") as f:
        pickle.dump(model, f)
    print(f"trained {epochs} epochs")


def evaluate() -> None:
    import mlflow
    from sklearn.metrics import accuracy_score

    _, X_val, _, y_val = split(os.environ["INPUT_DATA"])
    with open(Path(os.environ["INPUT_MODEL"]) / "model.pkl", "rb") as f:
        model = pickle.load(f)  # noqa: S301 - the pipeline's own train step wrote it
    accuracy = float(accuracy_score(y_val, model.predict(X_val)))
    with mlflow.start_run():
        mlflow.log_metric("accuracy", accuracy)
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
    with mlflow.start_run():
        mlflow.log_metric("accuracy", report["accuracy"])
        mlflow.sklearn.log_model(model, name="model")
    print("logged the model; the hub registers it as the step's register_model")


if __name__ == "__main__":
    {"prepare": prepare, "train": train, "evaluate": evaluate, "register": register}[sys.argv[1]]()
