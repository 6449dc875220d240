"""Tracking end to end: the digits example on the real cluster, logging with plain mlflow to
the real MLflow server, in both tracking modes, with its inputs recorded and reproduced."""

import subprocess
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from apps.clusters.models import Cluster
from apps.clusters.transport import slurm_client
from apps.datasets import services as dataset_services
from apps.integrations.mlflow.client import TrackingClient
from apps.jobs import selectors, services
from apps.jobs.models import Job
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant

pytestmark = [pytest.mark.slurm, pytest.mark.mlflow, pytest.mark.slow]

EXAMPLE = Path(settings.BASE_DIR) / "examples" / "digits"
S = Job.Status


def _mlflow_up() -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(settings.AXLE_MLFLOW_TRACKING_URI + "/health", timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture
def env():
    found = local_cluster_env()
    if found is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    if not _mlflow_up():
        pytest.skip("the MLflow server on 127.0.0.1:5000 does not answer")
    return found


def _setup(env, user, team, transport: str, mode: str):
    cluster = make_local_cluster(transport, f"local-{transport}")
    Cluster.objects.filter(pk=cluster.pk).update(tracking_mode=mode)
    cluster.refresh_from_db()
    grant = make_local_grant(cluster, user, "scientist", max_cpus=2, max_time_minutes=30)
    scratch = env["AXLE_LOCAL_SCRATCH_ROOT"].rstrip("/") + "/scientist"
    data_dir = f"{scratch}/test-datasets/digits"
    with slurm_client(grant) as client:
        files = client.files
        if files.run(["test", "-s", f"{data_dir}/digits.csv"]).exit_status != 0:
            result = files.run(
                [env["AXLE_LOCAL_PYTHON"], "-", data_dir], stdin=(EXAMPLE / "make_dataset.py").read_bytes()
            )
            assert result.exit_status == 0, result.err
    dataset = dataset_services.dataset_create(user=user, team=team, name="digits")
    version = dataset_services.dataset_version_register(user=user, dataset=dataset, cluster=cluster, path=data_dir)
    dataset_services.dataset_version_checksum(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == "ready", version.error
    return cluster, version, _code_repo(f"{scratch}/test-code/{uuid.uuid4().hex[:8]}.git")


def _code_repo(path: str) -> str:
    """A one-commit repository holding the example, owned by scientist like their own code."""
    work = Path(path + "-work")
    work.mkdir(parents=True)
    (work / "examples" / "digits").mkdir(parents=True)
    (work / "examples" / "digits" / "train.py").write_text((EXAMPLE / "train.py").read_text())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "."], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "example"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), path], check=True)
    subprocess.run(["chown", "-R", "scientist:", path], check=True)
    return path


def _run(user, cluster, version, repo, *, epochs="4", poll=None) -> Job:
    job = services.job_create(
        user=user,
        cluster=cluster,
        name="digits-test",
        script=(EXAMPLE / "train.sbatch").read_text(),
        parameters={"EPOCHS": epochs, "LEARNING_RATE": "0.05"},
        dataset_versions=[version.uuid],
        code={"repo": repo, "ref": "main"},
    )
    services.job_submit(job_id=job.pk)
    job.refresh_from_db()
    assert job.status in (S.PENDING, S.RUNNING), (job.status, job.failure_message, job.last_error)
    deadline = time.monotonic() + 240
    while job.status not in Job.TERMINAL and time.monotonic() < deadline:
        time.sleep(2)
        services.jobs_poll()
        if poll:
            poll(job)
        job.refresh_from_db()
    assert job.status == S.COMPLETED, (job.status, selectors.job_log_read(job=job, stream="stderr").text[-2000:])
    services.job_finalize(job_id=job.pk)
    job.refresh_from_db()
    return job


@pytest.mark.parametrize("transport,mode", [("ssh", "server"), ("ssh", "file"), ("rest", "file")])
def test_the_example_lands_in_the_hubs_run_with_its_inputs(env, alice, team, transport, mode):
    cluster, version, repo = _setup(env, alice, team, transport, mode)
    seen_while_running: list[int] = []

    def pull(job):
        # What the page shows while the job runs: file mode pulls incrementally.
        if job.status == S.RUNNING and mode == "file":
            services.job_sync_tracking(job_id=job.pk)
        if job.mlflow_run_id:
            history = selectors.job_metric_history(job=Job.objects.get(pk=job.pk))
            seen_while_running.append(len(history.get("val_accuracy", [])))

    job = _run(alice, cluster, version, repo, epochs="4", poll=pull)
    # Inputs recorded: the branch resolved to its commit, the dataset version, the script.
    head = subprocess.run(
        ["git", "--git-dir", repo, "rev-parse", "main"], capture_output=True, text=True
    ).stdout.strip()
    assert job.code_ref == "main" and job.code_commit == head
    assert list(job.dataset_versions.all()) == [version]
    assert job.mlflow_run_id and job.tracking_mode == mode

    tracking = TrackingClient(settings.AXLE_MLFLOW_TRACKING_URI)
    run = tracking.get_run(job.mlflow_run_id)
    assert run.status == "FINISHED"
    assert run.params["EPOCHS"] == "4" and run.params["learning_rate"] == "0.05"
    assert run.tags["axle.slurm_job_id"] == job.slurm_job_id and run.tags["axle.node_list"]
    assert run.tags["mlflow.source.git.commit"] == head
    history = tracking.metric_history(job.mlflow_run_id, ["val_accuracy", "train_loss"])
    assert [p.step for p in history["val_accuracy"]] == [1, 2, 3, 4]
    assert job.metrics["val_accuracy"] == history["val_accuracy"][-1].value > 0.8
    assert tracking.find_logged_model(job.mlflow_run_id) is not None
    assert max(seen_while_running, default=0) >= 1  # curves were there before the end


def test_a_reproduction_gives_identical_metrics(env, alice, team):
    cluster, version, repo = _setup(env, alice, team, "ssh", "server")
    original = _run(alice, cluster, version, repo, epochs="3")
    copy = services.job_reproduce(user=alice, job=original)
    assert copy.reproduced_from == original and copy.code_commit == original.code_commit
    services.job_submit(job_id=copy.pk)
    copy.refresh_from_db()
    deadline = time.monotonic() + 240
    while copy.status not in Job.TERMINAL and time.monotonic() < deadline:
        time.sleep(2)
        services.jobs_poll()
        copy.refresh_from_db()
    services.job_finalize(job_id=copy.pk)
    copy.refresh_from_db()
    assert copy.status == S.COMPLETED
    assert copy.metrics == original.metrics and copy.metrics
    assert copy.mlflow_run_id != original.mlflow_run_id


def test_an_unknown_branch_fails_the_job_with_a_clear_message(env, alice, team):
    cluster, version, repo = _setup(env, alice, team, "ssh", "server")
    job = services.job_create(
        user=alice,
        cluster=cluster,
        name="bad-ref",
        script=(EXAMPLE / "train.sbatch").read_text(),
        dataset_versions=[version.uuid],
        code={"repo": repo, "ref": "no-such-branch"},
    )
    services.job_submit(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == S.FAILED
    assert "no branch or tag named 'no-such-branch'" in job.failure_message
    assert not job.slurm_job_id


def test_an_artifact_downloads_and_leaves_no_temporary_files(env, alice, team, client):
    import tempfile

    cluster, version, repo = _setup(env, alice, team, "ssh", "server")
    job = _run(alice, cluster, version, repo, epochs="2")
    tracking_client = TrackingClient(settings.AXLE_MLFLOW_TRACKING_URI)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "notes.txt").write_text("hello artifact\n")
        tracking_client.log_artifacts(job.mlflow_run_id, tmp)
    before = set(Path(tempfile.gettempdir()).glob("axle-artifact-*"))
    client.force_login(alice)
    listing = client.get(f"/jobs/{job.uuid}/artifacts/").content.decode()
    assert "notes.txt" in listing
    response = client.get(f"/jobs/{job.uuid}/artifacts/download/", {"path": "notes.txt"})
    assert b"".join(response.streaming_content) == b"hello artifact\n"
    response.close()
    assert set(Path(tempfile.gettempdir()).glob("axle-artifact-*")) == before
