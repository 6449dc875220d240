import time

import pytest

from apps.jobs import services
from apps.jobs.models import Job
from tests.factories import PASSWORD
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant

pytestmark = [pytest.mark.browser, pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture
def grant(transactional_db, alice):
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    cluster = make_local_cluster("ssh", "local-ssh")
    return make_local_grant(cluster, alice, "scientist", max_cpus=2, max_time_minutes=30)


def login(page, username):
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")


def test_a_scientist_validates_submits_and_watches_a_job(page, grant):
    login(page, "alice")
    page.goto("/jobs/new/")
    page.fill("#id_name", "browser-run")
    page.fill("#id_script", '#!/bin/bash\n#SBATCH --partition=batch\n#SBATCH -t 5\necho "hello $GREETING"\n')
    page.fill("#id_parameters", "GREETING=axle")
    page.click("button[value=validate]")
    problems = page.locator(".problems").inner_text()
    assert "Line 2" in problems and "partition 'batch'" in problems

    page.fill("#id_script", '#!/bin/bash\n#SBATCH --partition=debug\n#SBATCH -t 5\necho "hello $GREETING"\n')
    page.click("button[value=validate]")
    assert "fits your grant" in page.locator("#validation").inner_text()
    page.click("button[value=submit]")
    page.wait_for_url("**/jobs/*/")
    assert page.locator("h1").inner_text() == "browser-run"

    job = Job.objects.get(name="browser-run")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and job.status not in Job.TERMINAL:
        services.jobs_poll()  # what the worker's tracking loop does every few seconds
        job.refresh_from_db()
        time.sleep(1)
    assert job.status == Job.Status.COMPLETED, (job.failure_message, job.last_error, job.exit_code, job.slurm_state)
    # The status box polls on its own; the log tail appends the output.
    page.wait_for_selector("#job-status [data-status=completed]", timeout=20000)
    page.wait_for_function("document.querySelector('#log-stdout').innerText.includes('hello axle')", timeout=20000)
    page.goto("/jobs/")
    assert "browser-run" in page.locator("table.jobs").inner_text()
