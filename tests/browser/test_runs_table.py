"""The runs table, compare, live lists, cancel confirmation and narrow screens in Chromium."""

import time

import pytest

from apps.integrations.mlflow.base import MetricPoint
from apps.jobs import tracking
from apps.jobs.models import Job
from tests.factories import PASSWORD, ClusterFactory, ClusterGrantFactory
from tests.registry.conftest import make_job, unique_name

pytestmark = [pytest.mark.browser]


def login(page, username="alice"):
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")


@pytest.fixture
def grant(transactional_db, alice):
    return ClusterGrantFactory(user=alice, cluster=ClusterFactory(name="hpc"))


def test_bulk_cancel_asks_first_and_cancels_only_the_ticked_jobs(page, grant, alice, team):
    jobs = [make_job(alice, team=team, grant=grant, name=f"queued-{i}", status=Job.Status.QUEUED) for i in range(3)]
    login(page)
    page.goto("/jobs/")
    page.check(f"#sel-{jobs[0].uuid}")
    page.check(f"#sel-{jobs[1].uuid}")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#bulk-cancel")
    page.wait_for_timeout(500)
    assert Job.objects.filter(status=Job.Status.CANCELLED).count() == 0, "dismissing the question cancels nothing"
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#bulk-cancel")
    page.wait_for_selector("text=Cancellation sent for 2 jobs")
    assert {j.name for j in Job.objects.filter(status=Job.Status.CANCELLED)} == {"queued-0", "queued-1"}
    assert Job.objects.get(pk=jobs[2].pk).status == Job.Status.QUEUED


def test_the_list_refreshes_a_changed_row_and_keeps_the_ticks(page, grant, alice, team):
    job = make_job(alice, team=team, grant=grant, name="watched", status=Job.Status.PENDING, slurm_job_id="55")
    other = make_job(alice, team=team, grant=grant, name="other", status=Job.Status.PENDING, slurm_job_id="56")
    login(page)
    page.goto("/jobs/")
    page.check(f"#sel-{other.uuid}")
    page.evaluate("window.__sameDocument = true")
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING)
    page.wait_for_selector(f"tr[data-job='{job.uuid}'] [data-status=running]", timeout=15000)
    assert page.is_checked(f"#sel-{other.uuid}"), "a ticked row stays ticked through a refresh"
    assert page.evaluate("window.__sameDocument === true")


def test_the_home_page_lists_refresh(page, grant, alice, team):
    job = make_job(alice, team=team, grant=grant, name="home-watched", status=Job.Status.RUNNING)
    login(page)
    page.wait_for_selector("#home-jobs [data-status=running]")
    Job.objects.filter(pk=job.pk).update(status=Job.Status.FAILED)
    page.wait_for_selector("#home-jobs [data-status=failed]", timeout=15000)


def test_cancel_on_the_job_page_asks_first_and_the_page_follows(page, grant, alice, team):
    job = make_job(alice, team=team, grant=grant, name="to-cancel", status=Job.Status.QUEUED)
    login(page)
    page.goto(f"/jobs/{job.uuid}/")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#job-cancel")
    page.wait_for_timeout(500)
    assert Job.objects.get(pk=job.pk).status == Job.Status.QUEUED
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#job-cancel")
    page.wait_for_selector("#job-status [data-status=cancelled]")
    assert page.locator("#job-cancel").count() == 0
    assert "Exit code" not in page.locator("#job-status").inner_text()


@pytest.mark.mlflow
def test_compare_overlays_the_curves_of_the_selected_runs(page, grant, alice, team, tracking_uri):
    client = tracking.client()
    experiment = client.ensure_experiment(unique_name("compare"))
    jobs = []
    for i, rate in enumerate((0.5, 0.8)):
        run = client.create_run(experiment, f"run-{i}")
        now = int(time.time() * 1000)
        client.log_metrics(run, [MetricPoint("loss", rate**step, now + step, step) for step in range(5)])
        jobs.append(
            make_job(
                alice,
                team=team,
                grant=grant,
                name="same-name",
                slurm_job_id=str(700 + i),
                mlflow_run_id=run,
                mlflow_experiment_id=experiment,
                metrics={"loss": rate**4},
            )
        )
    login(page)
    page.goto("/jobs/")
    for job in jobs:
        page.check(f"#sel-{job.uuid}")
    page.click("#bulk-compare")
    page.wait_for_url("**/jobs/compare/**")
    page.wait_for_selector("#compare-charts figure[data-metric=loss][data-series='2']")
    headers = page.locator("#compare-metrics thead").inner_text()
    assert "700" in headers and "701" in headers, "same-named runs are told apart by Slurm id"
    assert "0.3471)" in page.locator("#compare-metrics").inner_text(), "the difference to the first run"


@pytest.mark.parametrize("path", ["/", "/jobs/", "/jobs/compare/", "job", "/clusters/", "/deployments/", "/models/"])
def test_pages_fit_a_390_px_screen(browser, live_server, grant, alice, team, path):
    job = make_job(
        alice,
        team=team,
        grant=grant,
        name="a-rather-long-job-name-for-a-narrow-phone-screen",
        slurm_job_id="123456",
        metrics={"validation_accuracy": 0.91234},
        parameters={"LEARNING_RATE": "0.001"},
    )
    context = browser.new_context(base_url=live_server.url, viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        login(page)
        page.goto(f"/jobs/{job.uuid}/" if path == "job" else path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} scrolls sideways: {width}px"
    finally:
        page.goto("about:blank")  # stop the live pollers before the server goes away
        context.close()


def test_error_pages_are_branded_and_the_favicon_loads(page, grant):
    failed = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 and "favicon" in r.url else None)
    login(page)
    page.goto("/no/such/page/")
    assert "Nothing here" in page.locator("h1").inner_text()
    page.click("#error-home")
    page.wait_for_url("**/")
    assert page.locator("link[rel=icon]").count() == 1
    assert failed == []
