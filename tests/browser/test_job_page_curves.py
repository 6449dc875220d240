"""The job page's one live poll (every 5 s) answers for its regions and its metric charts in
Chromium: the chart fetches the history when the page opens and when a poll says the curves
changed, never on a timer of its own (issue 14: 200 open pages)."""

import time

import pytest
import requests
from django.conf import settings
from django.utils import timezone

from apps.integrations.mlflow.base import MetricPoint
from apps.jobs import tracking
from apps.jobs.models import Job
from tests.factories import PASSWORD
from tests.registry.conftest import make_job

pytestmark = [pytest.mark.browser, pytest.mark.mlflow, pytest.mark.slow]


@pytest.fixture
def running(transactional_db, alice, team):
    """A running job whose MLflow run already has two points of a curve."""
    try:
        requests.get(f"{settings.AXLE_MLFLOW_TRACKING_URI}/health", timeout=3).raise_for_status()
    except requests.RequestException:
        pytest.skip("needs the MLflow server of compose/local (stack.sh up)")
    hub = tracking.client()
    experiment_id = hub.ensure_experiment("axle-tests-live-curves")
    run_id = hub.create_run(experiment_id, "live-curves")
    now = int(time.time() * 1000)
    hub.log_metrics(run_id, [MetricPoint("loss", 1.0, now, 0), MetricPoint("loss", 0.5, now, 1)])
    job = make_job(
        alice,
        team=team,
        status=Job.Status.RUNNING,
        slurm_job_id="4243",
        mlflow_run_id=run_id,
        mlflow_experiment_id=experiment_id,
    )
    return job, hub


def _points(page) -> int:
    return int(page.locator("#metric-charts").get_attribute("data-points") or 0)


def until(page, condition: str, timeout: float = 15) -> None:
    """Wait for a JavaScript expression to hold (page.evaluate: the page's CSP refuses the
    string evaluation wait_for_function would do)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(condition):
        assert time.monotonic() < deadline, f"the page never showed {condition!r}"
        page.wait_for_timeout(200)


def test_the_chart_follows_the_pages_own_poll_and_fetches_only_what_changed(page, running):
    job, hub = running
    seen = []
    page.on("request", lambda r: seen.append(r.url))
    page.goto("/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")

    def polls():
        return [u for u in seen if f"/jobs/{job.uuid}/?live=" in u]

    def fetches():
        return [u for u in seen if u.endswith(f"/api/v1/jobs/{job.uuid}/metrics/")]

    page.goto(f"/jobs/{job.uuid}/")
    assert page.locator("#live-job").get_attribute("hx-trigger") == "every 5s"
    until(page, "document.querySelector('#metric-charts').dataset.points === '2'")
    # Two polls find nothing new: one request each, and the chart asks nothing more.
    page.wait_for_timeout(11000)
    assert len(polls()) >= 2 and len(fetches()) == 1, (polls(), fetches())

    # The job logs a point: the next poll carries a new curves version, the chart fetches once.
    hub.log_metrics(job.mlflow_run_id, [MetricPoint("loss", 0.25, int(time.time() * 1000), 2)])
    until(page, "document.querySelector('#metric-charts').dataset.points === '3'")
    assert len(fetches()) == 2
    assert page.locator("#job-status [data-status=running]").count() == 1

    # The job ends and its run is mirrored: the poll swaps the status, the chart takes the
    # final history once, and the polling stops.
    Job.objects.filter(pk=job.pk).update(status=Job.Status.COMPLETED, exit_code=0, finalized_at=timezone.now())
    page.wait_for_selector("#job-status [data-status=completed]", timeout=15000)
    until(page, "document.getElementById('live-job').dataset.liveFinal === 'true'")
    page.wait_for_timeout(1000)
    assert len(fetches()) == 3 and _points(page) == 3
    stopped = len(polls())
    page.wait_for_timeout(6000)
    assert len(polls()) == stopped, "a final job's page polls no more"


def test_a_failing_history_is_asked_again_later_by_one_timer_not_at_every_poll(page, running):
    job, hub = running
    fetches: list[float] = []
    start = time.monotonic()

    def history(route):
        fetches.append(time.monotonic() - start)
        if len(fetches) <= 2:
            route.fulfill(status=503, body="{}")  # MLflow away, twice
        else:
            route.continue_()

    page.route(f"**/api/v1/jobs/{job.uuid}/metrics/", history)
    page.goto("/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    start = time.monotonic()
    page.goto(f"/jobs/{job.uuid}/")
    page.wait_for_selector("#metric-error:not([hidden])", timeout=10000)
    # New points while the history fails: the polls swap the summary (a new curves version),
    # which asks nothing at once; the one timer asks again after 5 s, then after 10 s.
    hub.log_metrics(job.mlflow_run_id, [MetricPoint("loss", 0.25, int(time.time() * 1000), 2)])
    until(page, "document.querySelector('#metric-charts').dataset.points === '3'", timeout=30)
    assert len(fetches) == 3, fetches
    assert fetches[1] - fetches[0] >= 4.5 and fetches[2] - fetches[1] >= 9.5, fetches
    assert page.locator("#metric-error").is_hidden()
