"""A pipeline registered and run from the pages: the run page draws the DAG and follows the
steps' states live (htmx polling of a partial) until the run succeeds."""

import re
import time

import pytest

from apps.jobs import services as job_services
from apps.pipelines import services
from apps.pipelines.models import PipelineRun
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant
from tests.pipelines.conftest import ClusterRepo, script

from .test_jobs import login

pytestmark = [pytest.mark.browser, pytest.mark.slurm, pytest.mark.slow]

CHAIN = """name: chain
steps:
  first:
    script: first.sbatch
    outputs: [data]
  second:
    inputs: {data: first.data}
    script: second.sbatch
"""


@pytest.fixture
def grant(transactional_db, alice):
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    return make_local_grant(make_local_cluster("ssh", "local-ssh"), alice, "scientist", max_time_minutes=30)


def test_the_run_page_draws_the_dag_and_follows_the_steps_live(page, grant):
    repo = ClusterRepo(grant)
    repo.commit(
        {
            "axle-pipeline.yaml": CHAIN,
            "first.sbatch": script('sleep 3; echo one > "$OUTPUT_DATA/one.txt"'),
            "second.sbatch": script('cat "$INPUT_DATA/one.txt"'),
        }
    )
    login(page, "alice")
    page.goto("/pipelines/")
    page.fill("#p-name", "chain")
    page.fill("#p-repo", repo.path)
    page.click("text=Register")
    page.wait_for_url(re.compile(r".*/pipelines/[0-9a-f-]+/$"))
    page.click("button:has-text('Run')")
    page.wait_for_url(re.compile(r".*/pipeline-runs/[0-9a-f-]+/$"))
    assert page.locator("svg.lineage g.step").count() == 2
    assert page.locator("svg.lineage path.edge").count() == 1
    assert page.locator("button:has-text('Cancel')").count() == 1

    run = PipelineRun.objects.get(pipeline__name="chain")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not run.is_terminal:
        job_services.jobs_poll()  # what the workers' tracking loops do every few seconds
        services.pipeline_run_advance(run_id=run.pk)
        run.refresh_from_db()
        time.sleep(1)
    assert run.status == PipelineRun.Status.SUCCEEDED, run.message
    # No reload: the partial the page polls brings the new states.
    page.wait_for_selector("svg.lineage g[data-step=second][data-state=completed]", timeout=20000)
    page.wait_for_selector("#steps [data-status=completed]", timeout=5000)
    assert "sha256" in page.locator("#steps tr[data-step=first]").inner_text()
    page.click("svg.lineage g[data-step=second] a")
    page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]+/$"))
    assert page.locator("h1").inner_text() == "chain-second"
