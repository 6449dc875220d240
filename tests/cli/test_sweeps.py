"""`axle sweep submit experiment.yaml --script trial.sh` on the real local cluster: the sweep
runs as a job array until it succeeds, `sweep status`/`list` show it and its trials; a spec
the portal refuses is told by field path with exit 5."""

import json

import pytest
import yaml

from apps.jobs import services as job_services
from apps.sweeps import advance
from apps.sweeps.models import Sweep
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant
from tests.sweeps.test_on_slurm import _mlflow_up, trial_script

from .conftest import drive

pytestmark = [pytest.mark.slurm, pytest.mark.mlflow, pytest.mark.slow]


def experiment(values: list[str]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "kubeflow.org/v1beta1",
            "kind": "Experiment",
            "metadata": {"name": "cli-grid"},
            "spec": {
                "objective": {"type": "minimize", "objectiveMetricName": "loss"},
                "algorithm": {"algorithmName": "grid"},
                "parallelTrialCount": 2,
                "maxTrialCount": len(values),
                "parameters": [{"name": "x", "parameterType": "discrete", "feasibleSpace": {"list": values}}],
                "trialTemplate": {"trialParameters": [{"name": "x", "reference": "x"}]},
            },
        }
    )


@pytest.fixture
def local_grant(transactional_db, alice):
    env = local_cluster_env()
    if env is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    if not _mlflow_up():
        pytest.skip("the MLflow server does not answer")
    cluster = make_local_cluster("ssh", "local-ssh")
    return make_local_grant(cluster, alice, "scientist", max_cpus=2, max_array_size=10, max_time_minutes=60)


def _work():
    job_services.jobs_poll()
    for pk in Sweep.objects.exclude(status__in=Sweep.TERMINAL).values_list("pk", flat=True):
        advance.sweep_advance(sweep_id=pk)


def test_a_sweep_is_submitted_waited_for_and_shown_with_its_trials(axle_for, alice, local_grant, tmp_path):
    axle = axle_for(alice)
    spec, script = tmp_path / "experiment.yaml", tmp_path / "trial.sh"
    spec.write_text(experiment(["3", "1", "2"]))
    script.write_text(trial_script(local_cluster_env()["AXLE_LOCAL_PYTHON"]))

    proc = axle.start("sweep", "submit", str(spec), "--script", str(script), "-c", "local-ssh", "--wait", "--json")
    code, out, err = drive(proc, _work)
    assert code == 0, err
    body = json.loads(out)
    assert (body["status"], body["best_value"], body["max_trial_count"]) == ("succeeded", 1.0, 3)

    status = axle("sweep", "status", body["id"][:8], "--json")
    trials = json.loads(status.stdout)["trials"]
    assert sorted(t["params"]["x"] for t in trials) == ["1", "2", "3"]
    assert {t["state"] for t in trials} == {"succeeded"}
    table = axle("sweep", "status", body["id"]).stdout
    assert "succeeded" in table and "x=1" in table
    assert body["id"][:8] in axle("sweep", "list").stdout


def test_a_refused_spec_names_the_field_and_exits_5(axle_for, alice, local_grant, tmp_path):
    axle = axle_for(alice)
    spec = tmp_path / "experiment.yaml"
    spec.write_text(experiment(["1"]).replace("parallelTrialCount: 2", "parallelTrialCount: 0"))
    script = tmp_path / "trial.sh"
    script.write_text("#!/bin/bash\n#SBATCH --partition=debug\n#SBATCH --time=00:01:00\necho ${trialParameters.x}\n")
    result = axle("sweep", "submit", str(spec), "--script", str(script), "-c", "local-ssh")
    assert result.returncode == 5, result.stderr
    assert f"{spec}: spec.parallelTrialCount" in result.stderr
    assert not Sweep.objects.exists()
