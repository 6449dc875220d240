"""One real run, end to end: a job on the local Slurm cluster trains a scikit-learn model and
logs it with plain `mlflow` under the environment the hub exports; when the job ends the hub
registers the model (here and in MLflow's registry) and its lineage leads back to the job's
dataset version and exact script."""

import textwrap
import time

import pytest

from apps.jobs import services as job_services
from apps.jobs.models import Job
from apps.jobs.tracking import client as tracking_client
from apps.lineage.selectors import lineage
from apps.registry import services
from apps.registry.models import ModelVersion
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant

from .conftest import make_dataset_version, unique_name

pytestmark = [pytest.mark.slurm, pytest.mark.mlflow, pytest.mark.slow]

TRAIN = textwrap.dedent(
    """\
    #!/bin/bash
    #SBATCH --partition=debug
    #SBATCH --time=00:05:00
    #SBATCH --mem=1G
    set -euo pipefail
    {python} - <<'PY'
    import mlflow
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    with mlflow.start_run():  # makes the job's run, tagged from MLFLOW_RUN_CONTEXT: the hub finds it
        model = LogisticRegression(C=0.5, max_iter=300).fit(X, y)
        mlflow.log_param("C", 0.5)
        mlflow.log_metric("train_accuracy", model.score(X, y))
        mlflow.sklearn.log_model(model, name="model")
    PY
    """
)


def test_a_real_jobs_model_is_registered_with_its_lineage(
    alice, team, tracking_uri, django_capture_on_commit_callbacks
):
    env = local_cluster_env()
    if env is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    cluster = make_local_cluster("ssh", "local-ssh")
    make_local_grant(cluster, alice, "scientist", max_cpus=2, max_time_minutes=60)
    data = make_dataset_version(team, alice, "iris", 1)
    name = unique_name("axle-e2e")
    job = job_services.job_create(
        user=alice,
        cluster=cluster,
        name="train-iris",
        script=TRAIN.format(python=env.get("AXLE_LOCAL_PYTHON", "/var/lib/axle/venv/bin/python")),
        dataset_versions=[data.uuid],
        register_model_as=name,
        team=team,
    )
    job_services.job_submit(job_id=job.pk)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        job_services.jobs_poll()
        job.refresh_from_db()
        if job.is_terminal:
            break
        time.sleep(1)
    assert job.status == Job.Status.COMPLETED, (job.status, job.failure_message, job.last_error)
    # The worker's step, with what it queues on commit run as the worker would run it.
    with django_capture_on_commit_callbacks(execute=True):
        job = job_services.job_finalize(job_id=job.pk)
    assert job.finalized_at and "train_accuracy" in job.metrics, job.last_error

    # Asked for at submission: registered automatically as the owner when the job completed.
    version = ModelVersion.objects.select_related("model").get(job=job)
    assert version.model.name == name and version.model.team == team and version.created_by == alice
    assert version.number == 1 and version.mlflow_run_id == job.mlflow_run_id
    run = tracking_client().get_run(job.mlflow_run_id)  # the run the job's code made, adopted
    assert run.params["C"] == "0.5" and run.tags["axle.job_id"] == str(job.uuid) and run.status == "FINISHED"
    assert version.source_uri.startswith("models:/m-") or version.source_uri.startswith("runs:/")
    mlflow = tracking_client()
    assert version.sha256 == mlflow.model_sha256(version.source_uri)
    assert (
        version.metrics["train_accuracy"] == pytest.approx(job.metrics["train_accuracy"])
        and version.metrics["train_accuracy"] > 0.9
    )
    [registered] = mlflow.search_model_versions(name)
    assert (registered.version, registered.run_id, registered.source) == ("1", job.mlflow_run_id, version.source_uri)

    # Registering it by hand now returns that same version.
    assert services.model_version_register(user=alice, model_name=name, job=job).pk == version.pk

    g = lineage(user=alice, kind="model_version", id=version.uuid)
    edges = {(e.source, e.target, e.relation) for e in g.edges}
    assert (f"job:{job.uuid}", f"model_version:{version.uuid}", "produced") in edges
    assert (f"dataset_version:{data.uuid}", f"job:{job.uuid}", "input_of") in edges
    assert (f"script:{job.script_sha256}", f"job:{job.uuid}", "script_of") in edges
