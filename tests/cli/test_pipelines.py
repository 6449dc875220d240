"""`axle pipeline run NAME --wait` on the real local cluster, against the pipelines API
(`GET /api/v1/pipelines/?name=`, `POST /api/v1/pipelines/{id}/run/`,
`GET /api/v1/pipeline-runs/{id}/`), and `pipeline status` showing the run.

Written before that API was merged (branch `pipelines`): it is skipped until apps.pipelines
exists, and runs in the suite from the integration on."""

import json

import pytest

pipelines_services = pytest.importorskip(
    "apps.pipelines.services", reason="the pipelines app (branch pipelines) is not merged yet"
)

from apps.jobs import services as job_services  # noqa: E402
from apps.pipelines.models import PipelineRun  # noqa: E402
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant  # noqa: E402
from tests.pipelines.conftest import ClusterRepo, script  # noqa: E402

from .conftest import drive  # noqa: E402

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

PIPELINE = """
name: two-steps
parameters:
  GREETING: hello
steps:
  make:
    script: steps/make.sbatch
    outputs: [data]
  use:
    needs: [make]
    inputs: {data: make.data}
    outputs: [out]
    script: steps/use.sbatch
"""

FILES = {
    "axle-pipeline.yaml": PIPELINE,
    "steps/make.sbatch": script('echo "$GREETING" > "$OUTPUT_DATA/x.txt"'),
    "steps/use.sbatch": script('cat "$INPUT_DATA/x.txt" > "$OUTPUT_OUT/y.txt"'),
}


@pytest.fixture
def local_grant(transactional_db, alice):
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    cluster = make_local_cluster("ssh", "local-ssh")
    return make_local_grant(cluster, alice, "scientist", max_cpus=2, max_time_minutes=60)


def _work():
    job_services.jobs_poll()
    pipelines_services.pipeline_runs_advance()


def test_a_pipeline_runs_from_the_terminal_until_it_succeeds(axle_for, alice, team, local_grant):
    repo = ClusterRepo(local_grant)
    commit = repo.commit(FILES)
    pipelines_services.pipeline_create(
        user=alice, team=team, name="two-steps", grant=local_grant, repo_url=repo.path, branch="main"
    )
    axle = axle_for(alice)

    proc = axle.start("pipeline", "run", "two-steps", "--commit", commit, "--wait", "--json")
    code, out, err = drive(proc, _work)
    assert code == 0, err
    run = json.loads(out)
    assert (run.get("state") or run.get("status")) == "succeeded"
    assert PipelineRun.objects.get().status == PipelineRun.Status.SUCCEEDED

    missing = axle("pipeline", "run", "no-such-pipeline")
    assert missing.returncode == 4 and "No pipeline 'no-such-pipeline'" in missing.stderr
    status = axle("pipeline", "status", run["id"], "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["id"] == run["id"]
