"""Train a handwritten-digits classifier and log it with plain MLflow.

Nothing here knows about Axle: the hub exports MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_ID,
and either MLFLOW_RUN_ID (a run it opened before sbatch: `mlflow.start_run()` continues it) or
MLFLOW_RUN_CONTEXT (`mlflow.start_run()` makes the job's run, with the tags by which the hub
finds it).
The data is the dataset version the job declared, found through AXLE_DATASET_DIGITS (or
scikit-learn's bundled copy when run by hand). Deterministic: the same inputs give the same
metrics, which is what "Reproduce" checks.
"""

import csv
import os
import sys
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split


def load(data_dir: str | None):
    if not data_dir:
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.data, digits.target
    with open(Path(data_dir) / "digits.csv", newline="") as f:
        rows = list(csv.reader(f))
    data = np.array([[float(v) for v in row[:-1]] for row in rows[1:]])
    target = np.array([int(row[-1]) for row in rows[1:]])
    return data, target


def main() -> int:
    epochs = int(os.environ.get("EPOCHS", "15"))
    learning_rate = float(os.environ.get("LEARNING_RATE", "0.01"))
    X, y = load(os.environ.get("AXLE_DATASET_DIGITS"))
    X = X / 16.0  # pixel intensities are 0..16
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    classes = np.unique(y)

    with mlflow.start_run():
        mlflow.log_params(
            {
                "epochs": epochs,
                "learning_rate": learning_rate,
                "model": "SGDClassifier(log_loss)",
                "train_size": len(X_train),
                "val_size": len(X_val),
            }
        )
        model = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=learning_rate, random_state=0)
        for epoch in range(1, epochs + 1):
            model.partial_fit(X_train, y_train, classes=classes)
            metrics = {
                "train_loss": log_loss(y_train, model.predict_proba(X_train), labels=classes),
                "val_loss": log_loss(y_val, model.predict_proba(X_val), labels=classes),
                "train_accuracy": accuracy_score(y_train, model.predict(X_train)),
                "val_accuracy": accuracy_score(y_val, model.predict(X_val)),
            }
            mlflow.log_metrics(metrics, step=epoch)
            print(f"epoch {epoch:2d}  " + "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)
        mlflow.sklearn.log_model(model, name="model", input_example=X_val[:2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
