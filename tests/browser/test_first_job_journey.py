"""The first-job journey in Chromium without a single reload: submit on the real cluster, the
page shows running, the curves grow while it runs, it completes, the register form appears;
then register the model and request its deployment (stopping at the request)."""

import re
import textwrap
import time

import pytest

from apps.jobs import services
from apps.jobs.models import Job
from apps.serving.models import Deployment, Environment
from tests.factories import PASSWORD
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant
from tests.registry.conftest import unique_name

pytestmark = [pytest.mark.browser, pytest.mark.slurm, pytest.mark.mlflow, pytest.mark.slow]

TRAIN = textwrap.dedent(
    """\
    #!/bin/bash
    #SBATCH --partition=debug
    #SBATCH --time=00:05:00
    #SBATCH --mem=1G
    set -euo pipefail
    echo "training starts"
    # Library warnings go with the output, so stderr stays empty (and is shown as empty).
    {python} - 2>&1 <<'PY'
    import time
    import mlflow
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    with mlflow.start_run():
        for step in range(12):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            print(f"step {{step}}", flush=True)
            print("\\n".join(f"  batch {{b}} of step {{step}}" for b in range(15)), flush=True)
            time.sleep(1.5)
        model = LogisticRegression(max_iter=300).fit(X, y)
        mlflow.log_metric("train_accuracy", model.score(X, y))
        mlflow.sklearn.log_model(model, name="model")
    PY
    """
)


@pytest.fixture
def grant(transactional_db, alice, tracking_uri):
    env = local_cluster_env()
    if env is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    cluster = make_local_cluster("ssh", "local-ssh")
    return make_local_grant(cluster, alice, "scientist", max_cpus=2, max_time_minutes=30), env


def login(page, username):
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")


def drive(page, job, condition: str, timeout: float = 600) -> None:
    """Do what the worker does (poll Slurm, finalize an ended job) until the page, on its own,
    satisfies ``condition`` (a JavaScript expression)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        services.jobs_poll()
        job.refresh_from_db()
        if job.is_terminal and not job.finalized_at:
            services.job_finalize(job_id=job.pk)
        if page.evaluate(condition):
            return
        page.wait_for_timeout(1000)
    job.refresh_from_db()
    problem = job.last_error or job.failure_message
    raise AssertionError(f"the page never showed {condition!r}; job {job.status}: {problem}")


def test_the_first_job_journey_needs_no_reload(page, grant, team):
    _, env = grant
    Environment.objects.create(name="production", required_approvals=1, approver_team=team)
    login(page, "alice")
    page.goto("/jobs/new/")
    page.fill("#id_name", "first-journey")
    page.fill("#id_script", TRAIN.format(python=env.get("AXLE_LOCAL_PYTHON", "/var/lib/axle/venv/bin/python")))
    page.fill("#id_parameters", "")
    # Submission hands the job to Slurm before answering (tasks run inline in tests): on a busy
    # machine that takes more than Playwright's default wait.
    page.click("button[value=submit]", no_wait_after=True)
    page.wait_for_selector("#job-status, .problems, p.error", timeout=180000)
    assert re.search(r"/jobs/[0-9a-f-]{36}/$", page.url), page.locator("main").inner_text()
    job = Job.objects.get(name="first-journey")
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    page.evaluate("window.__sameDocument = true")

    drive(page, job, "!!document.querySelector('#job-status [data-status=running]')")
    assert page.locator("#job-cancel").is_visible(), "a running job offers Cancel"
    assert page.locator("#mlflow-run").count() == 1, "the MLflow run is linked"

    # The curve grows while the job still runs.
    drive(page, job, "!!document.querySelector('#metric-charts figure[data-metric=loss]')")
    running_points = int(page.locator("#metric-charts").get_attribute("data-points") or 0)
    assert page.locator("#job-status [data-status=running]").count() == 1, "curves appear while running"
    assert running_points > 0

    # The log follows new lines until the reader scrolls up; then it stays put until asked.
    log = "document.querySelector('#log-stdout')"
    drive(page, job, f"{log}.scrollHeight > {log}.clientHeight + 100")
    assert page.evaluate(f"{log}.scrollHeight - {log}.scrollTop - {log}.clientHeight < 30"), "it follows"
    page.evaluate(f"{log}.scrollTop = 0")
    page.wait_for_selector("#log-follow", state="visible")
    before = page.evaluate(f"{log}.innerText.length")
    drive(page, job, f"{log}.innerText.length > {before}", timeout=60)
    assert page.evaluate(f"{log}.scrollTop") == 0, "scrolled up: new lines do not pull the reader down"
    page.click("#log-follow-resume")
    assert page.evaluate(f"{log}.scrollHeight - {log}.scrollTop - {log}.clientHeight < 30")

    drive(page, job, "!!document.querySelector('#job-status [data-status=completed]')")
    drive(page, job, "!!document.querySelector('#register-form')")
    assert page.locator("#job-cancel").count() == 0, "an ended job offers no Cancel"
    assert "→ completed" in page.locator("#job-timeline").inner_text()
    drive(page, job, f"Number(document.querySelector('#metric-charts').dataset.points) > {running_points}")
    page.wait_for_function("document.querySelector('#log-stdout').innerText.includes('step 11')")
    page.fill("#log-search", "batch 3 of step 1")
    # "batch 3 of step 1", "… step 10" and "… step 11": three lines.
    assert page.locator("#log-search-count").inner_text() == "3 matching lines"
    assert "stdout:" in page.locator("#log-matches").inner_text()
    # stderr stayed empty: no black box for it.
    assert page.locator(".logstream[data-stream=stderr][data-empty=true]").count() == 1
    assert not page.locator("#log-stderr").is_visible()
    assert page.evaluate("window.__sameDocument === true"), "the page was never reloaded"
    assert navigations == [], navigations

    # Register the model from the form that appeared, then request its deployment.
    name = unique_name("journey")
    page.fill("#model-name", name)
    page.click("#register-form button[type=submit]", no_wait_after=True)
    page.wait_for_url(re.compile(r".*/models/.*"), timeout=180000)
    page.wait_for_load_state()
    assert f"/models/{name}/" in page.url, page.locator("main").inner_text()
    page.click(f"a[href*='/deployments/new/?model={name}']")
    page.select_option("#id_environment", "production")
    page.fill("#id_reason", "first model, loss went down")
    page.click("text=Request deployment")
    page.wait_for_url("**/deployments/*/")
    assert page.locator("[data-status]").first.get_attribute("data-status") == "requested"
    assert Deployment.objects.get(model_version__model__name=name).status == Deployment.Status.REQUESTED
