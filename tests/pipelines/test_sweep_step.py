"""A pipeline step that is a sweep, on the real cluster: the sweep runs as the sweeps app runs
it (a job array), and when it ends the hub hands the best trial's outputs to the next step."""

import pytest

from apps.pipelines import services
from apps.pipelines.models import PipelineRun, StepRun
from apps.sweeps.models import Sweep
from tests.local_cluster import local_cluster_env
from tests.sweeps.test_on_slurm import _mlflow_up, experiment, trial_script

from .conftest import drive, script

pytestmark = [pytest.mark.slurm, pytest.mark.mlflow, pytest.mark.slow]

PIPELINE = """name: tune
steps:
  prepare:
    script: prepare.sbatch
    outputs: [data]
  search:
    sweep: experiment.yaml
    script: trial.sbatch
    inputs: {data: prepare.data}
    outputs: [result]
  use:
    inputs: {best: search.result}
    outputs: [final]
    script: use.sbatch
"""


def test_a_sweep_step_hands_its_best_trials_output_to_the_next_step(alice, team, grant, cluster_repo):
    if not _mlflow_up():
        pytest.skip("the MLflow server does not answer")
    python = local_cluster_env()["AXLE_LOCAL_PYTHON"]
    trial = trial_script(python) + 'cat "$INPUT_DATA/seed.txt" > "$OUTPUT_RESULT/x.txt"\n'
    trial += 'echo "${trialParameters.x}" >> "$OUTPUT_RESULT/x.txt"\n'
    cluster_repo.commit(
        {
            "axle-pipeline.yaml": PIPELINE,
            "experiment.yaml": experiment("tune", ["3", "1", "2"], parallel=3),
            "trial.sbatch": trial,
            "prepare.sbatch": script('echo seed > "$OUTPUT_DATA/seed.txt"'),
            "use.sbatch": script('cp "$INPUT_BEST/x.txt" "$OUTPUT_FINAL/x.txt"'),
        }
    )
    pipeline = services.pipeline_create(
        user=alice, team=team, name="tune", grant=grant, repo_url=cluster_repo.path, branch="main"
    )
    run = services.pipeline_run_start(pipeline=pipeline, actor=alice, trigger="user")
    services.pipeline_run_advance(run_id=run.pk)
    run = drive(run, timeout=900)
    assert run.status == PipelineRun.Status.SUCCEEDED, (run.message, list(run.steps.values_list("name", "message")))
    search = run.steps.get(name="search")
    assert search.sweep.status == Sweep.Status.SUCCEEDED and search.job is None
    assert search.sweep.trials.count() == 3
    best = search.sweep.trials.get(objective=1.0)
    result = search.outputs.get()
    assert result.path.endswith(f"/trial-{best.number}/result") and result.sha256
    assert "Best trial" in search.message
    final = run.steps.get(name="use").outputs.get()
    assert cluster_repo.read(f"{final.path}/x.txt") == "seed\n1\n"
    # The hand-off is the hub's: the next step was no Slurm dependency of the sweep.
    assert not any(a.startswith("--dependency") for a in run.steps.get(name="use").job.hub_args)
    assert run.steps.get(name="prepare").state == StepRun.State.COMPLETED
