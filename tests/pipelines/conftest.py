"""A git repository on the local cluster, made as the grant's own account, and a driver that
does what the workers do (the jobs' batched poll, then a pass over the run)."""

import time
import uuid

import pytest

from apps.clusters.transport import slurm_client
from apps.jobs import services as job_services
from apps.jobs.models import Job
from apps.pipelines import services
from apps.pipelines.models import PipelineRun, StepRun
from apps.sweeps.advance import sweep_advance
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant

HEAD = "#!/bin/bash\n#SBATCH --partition=debug\n#SBATCH --time=00:05:00\n#SBATCH --mem=100M\nset -euo pipefail\n"


def script(body: str) -> str:
    return HEAD + body.strip() + "\n"


class ClusterRepo:
    """A git repository in the grant account's scratch, written and committed over SSH."""

    def __init__(self, grant):
        self.grant = grant
        self.path = f"{grant.job_root}/test-repos/{uuid.uuid4().hex[:12]}"

    def _git(self, files, *args: str) -> str:
        result = files.run(
            ["git", "-c", "user.name=Axle Test", "-c", "user.email=test@axle.invalid", "-C", self.path, *args],
            timeout=60,
        )
        assert result.exit_status == 0, result.err
        return result.out

    def commit(self, contents: dict[str, str], message: str = "change") -> str:
        with slurm_client(self.grant) as client:
            files = client.files
            if files.run(["test", "-d", f"{self.path}/.git"]).exit_status != 0:
                files.mkdir(self.path)
                self._git(files, "init", "--quiet", "--initial-branch=main")
            for name, text in contents.items():
                files.write(f"{self.path}/{name}", text.encode(), mode=0o755 if name.endswith(".sbatch") else 0o644)
            self._git(files, "add", "--all")
            self._git(files, "commit", "--quiet", "--allow-empty", "-m", message)
            return self._git(files, "rev-parse", "HEAD").strip()

    def read(self, path: str) -> str:
        with slurm_client(self.grant) as client:
            return client.files.read(path)[0].decode()


@pytest.fixture(params=["ssh", "rest"])
def grant(request, alice):
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    cluster = make_local_cluster(request.param, f"local-{request.param}")
    return make_local_grant(cluster, alice, "scientist", max_cpus=2, max_time_minutes=60)


@pytest.fixture
def cluster_repo(grant):
    return ClusterRepo(grant)


def drive(run: PipelineRun, timeout: float = 600, until=None) -> PipelineRun:
    """Poll and advance until the run ended and no step is left on Slurm."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # What the jobs' tracking loop does: submissions the cluster refused for now, when due.
        for job_id in Job.objects.filter(status=Job.Status.QUEUED, pipeline_steps__run=run).values_list(
            "pk", flat=True
        ):
            job_services.job_submit(job_id=job_id)
        job_services.jobs_poll()
        for sweep_id in run.steps.filter(sweep__isnull=False).values_list("sweep_id", flat=True):
            sweep_advance(sweep_id=sweep_id)  # what the sweeps' own tracking loop does
        services.pipeline_run_advance(run_id=run.pk)
        run.refresh_from_db()
        if until is not None:
            if until(run):
                return run
        elif run.is_terminal and not run.steps.filter(state=StepRun.State.SUBMITTED).exists():
            return run
        time.sleep(1)
    raise AssertionError(f"run stayed {run.status}: {list(run.steps.values_list('name', 'state'))}")
