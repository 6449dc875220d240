import pytest
import yaml

from tests.factories import ClusterFactory, ClusterGrantFactory

SCRIPT = """#!/bin/bash
#SBATCH --partition=debug
#SBATCH --time=00:05:00
python train.py --lr=${trialParameters.learningRate}
"""


def experiment(*, algorithm="random", trials=4, parallel=2, goal=None, max_failed=None, early=None, space=None) -> str:
    spec = {
        "objective": {"type": "minimize", "objectiveMetricName": "loss"},
        "algorithm": {"algorithmName": algorithm, "algorithmSettings": [{"name": "random_state", "value": "1"}]},
        "parallelTrialCount": parallel,
        "maxTrialCount": trials,
        "parameters": [
            {"name": "lr", "parameterType": "double", "feasibleSpace": space or {"min": "0.01", "max": "0.1"}}
        ],
        "trialTemplate": {"trialParameters": [{"name": "learningRate", "reference": "lr"}], "trialSpec": SCRIPT},
    }
    if goal is not None:
        spec["objective"]["goal"] = goal
    if max_failed is not None:
        spec["maxFailedTrialCount"] = max_failed
    if early:
        spec["earlyStopping"] = early
    return yaml.safe_dump(
        {"apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment", "metadata": {"name": "lr"}, "spec": spec}
    )


@pytest.fixture
def grant(alice):
    return ClusterGrantFactory(
        user=alice,
        cluster=ClusterFactory(name="hpc"),
        cluster_username="alice01",
        allowed_partitions=["debug"],
        max_array_size=10,
        max_active_jobs=3,
    )
