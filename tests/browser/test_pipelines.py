"""A pipeline registered and run from the pages: the run page draws the DAG and follows the
steps' states live (apps/core/live.py's poller) until the run succeeds; a member sets up a
schedule and a webhook on the pipeline's page and sees the run a push starts appear live."""

import hashlib
import hmac
import json
import re
import time
import urllib.request
from zoneinfo import ZoneInfo

import pytest

from apps.jobs import services as job_services
from apps.pipelines import services
from apps.pipelines.models import PipelineRun
from apps.pipelines.triggers.models import PipelineSchedule
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
    page.click("button:has-text('Register')")
    page.wait_for_url(re.compile(r".*/pipelines/[0-9a-f-]+/$"))
    # Reading the file at the commit and submitting the steps (with their MLflow runs) happen
    # in this request; the shared cluster may be slow (the click itself would wait only 15 s).
    page.click("button:has-text('Run')", no_wait_after=True)
    page.wait_for_url(re.compile(r".*/pipeline-runs/[0-9a-f-]+/$"), timeout=180000)
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


TINY = """name: tiny
steps:
  hello:
    script: hello.sbatch
    outputs: [greeting]
"""


def test_a_member_adds_a_schedule_and_a_webhook_and_a_pushed_run_appears_live(page, grant, team, live_server):
    repo = ClusterRepo(grant)
    first = repo.commit({"axle-pipeline.yaml": TINY, "hello.sbatch": script('echo hi > "$OUTPUT_GREETING/hi.txt"')})
    pipeline = services.pipeline_create(user=grant.user, team=team, name="tiny", grant=grant, repo_url=repo.path)
    login(page, "alice")
    page.goto(f"/pipelines/{pipeline.uuid}/")

    # A schedule, on Berlin's clocks: the page shows its next fire time there and in UTC.
    page.fill("#id_cron", "0 3 * * 1-5")
    page.fill("#id_timezone", "Europe/Berlin")
    page.click("button:has-text('Add schedule')")
    page.wait_for_selector("#schedules tr[data-schedule]")
    schedule = PipelineSchedule.objects.get(pipeline=pipeline)
    local = schedule.next_fire_at.astimezone(ZoneInfo("Europe/Berlin"))
    shown = page.locator("#schedules td.next-fire").inner_text()
    assert f"{local:%Y-%m-%d} 03:00 Europe/Berlin" in shown and f"{schedule.next_fire_at:%H:%M} UTC" in shown
    assert "alice's grant" in page.locator("#schedules").inner_text()

    # A webhook: the URL and the secret are shown once, the secret never again.
    page.click("button:has-text('Make a webhook secret')")
    secret = page.locator("#webhook-secret").inner_text().strip()
    url = page.locator("#webhook-url").inner_text().strip()
    assert len(secret) >= 40 and url == f"{live_server.url}/hooks/pipelines/{pipeline.uuid}/"
    page.click("a:has-text('Back to the pipeline')")
    page.wait_for_selector("#webhook-url")
    assert secret not in page.content()
    assert page.locator("#pipeline-runs").inner_text().strip() == "No runs yet."
    page.evaluate("window.notReloaded = true")

    # The forge pushes (GitHub's scheme); the page, left alone, shows the run it started.
    body = json.dumps({"ref": "refs/heads/main", "before": "0" * 40, "after": first, "repository": {}}).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": "browser-delivery-1",
            "X-Hub-Signature-256": signature,
        },
    )
    # The worker's task runs inline in tests: the answer comes once the run was started.
    with urllib.request.urlopen(request, timeout=180) as answer:  # noqa: S310 - the live test server
        assert answer.status == 202
    run = PipelineRun.objects.get(pipeline=pipeline)
    assert run.trigger == "push" and run.delivery_id == "browser-delivery-1"
    row = page.wait_for_selector(f"#pipeline-runs tr[data-run='{run.uuid}'][data-trigger=push]", timeout=20000)
    assert "delivery browser-delivery-1" in row.inner_text() and f"#{run.number}" in row.inner_text()
    # The triggers section is live too: the delivery is listed with what it did.
    delivery = page.wait_for_selector("#deliveries tr:has-text('browser-delivery-1')", timeout=20000)
    assert "Started a run" in delivery.inner_text()
    assert page.evaluate("window.notReloaded") is True
    services.pipeline_run_cancel(user=grant.user, run=run)
