"""The job page's live regions (apps.core.live): a poll costs nothing while nothing changed,
and re-renders every state-dependent part when something did."""

import re

import pytest

from apps.jobs.models import Job
from tests.factories import ClusterGrantFactory
from tests.registry.conftest import make_job

HX = {"HTTP_HX_REQUEST": "true"}


def _poll_url(page: str) -> str:
    match = re.search(r'id="live-job"[^>]*hx-get="([^"]+)"', page)
    assert match, "the page has a live poller while the job can still change"
    return match.group(1).replace("&amp;", "&")


@pytest.fixture
def running(alice, team):
    grant = ClusterGrantFactory(user=alice)
    return make_job(alice, team=team, grant=grant, status=Job.Status.RUNNING, slurm_job_id="4242")


@pytest.mark.django_db
def test_a_poll_answers_204_while_nothing_changed(client, alice, running):
    client.force_login(alice)
    url = _poll_url(client.get(f"/jobs/{running.uuid}/").content.decode())
    response = client.get(url, **HX)
    assert response.status_code == 204 and response.content == b""
    assert response["ETag"].strip('"') in url


@pytest.mark.django_db
def test_a_poll_after_completion_swaps_badge_cancel_button_register_form_and_timeline(client, alice, running):
    client.force_login(alice)
    page = client.get(f"/jobs/{running.uuid}/").content.decode()
    assert 'id="job-cancel"' in page and "register-form" not in page
    url = _poll_url(page)
    Job.objects.filter(pk=running.pk).update(
        status=Job.Status.COMPLETED, exit_code=0, mlflow_run_id="r" * 32, mlflow_experiment_id="7"
    )
    response = client.get(url, **HX)
    body = response.content.decode()
    assert response.status_code == 200
    for region in ("job-actions", "job-meta", "job-status", "job-timeline", "job-metrics-summary", "job-register"):
        assert re.search(rf'id="{region}"[^>]*hx-swap-oob="true"', body), region
    assert 'data-status="completed"' in body
    assert 'id="job-cancel"' not in body, "an ended job offers no Cancel"
    assert 'id="register-form"' in body
    assert "/#/experiments/7/runs/" + "r" * 32 in body, "the MLflow run is linked"
    # Not final until the tracking data is mirrored: the new poller still polls.
    assert re.search(r'id="live-job"[^>]*hx-swap-oob="true"[^>]*hx-get=', body)


@pytest.mark.django_db
def test_a_final_job_stops_the_polling(client, alice, team):
    from django.utils import timezone

    job = make_job(alice, team=team, status=Job.Status.COMPLETED, finalized_at=timezone.now())
    client.force_login(alice)
    page = client.get(f"/jobs/{job.uuid}/").content.decode()
    assert 'id="live-job"' in page and 'data-live-final="true"' in page
    assert not re.search(r'id="live-job"[^>]*hx-get=', page)
    # A browser that still holds the version is told to stop (286).
    version = re.search(r'data-live-version="([0-9a-f]+)"', page).group(1)
    assert client.get(f"/jobs/{job.uuid}/?live={version}", **HX).status_code == 286


@pytest.mark.django_db
def test_a_cancelled_job_never_shows_exit_code_0(client, alice, team):
    job = make_job(alice, team=team, status=Job.Status.CANCELLED, exit_code=0, slurm_job_id="77")
    client.force_login(alice)
    page = client.get(f"/jobs/{job.uuid}/").content.decode()
    assert "Exit code" not in page and "Cancelled" in page


@pytest.mark.django_db
def test_cancel_asks_for_confirmation(client, alice, running):
    client.force_login(alice)
    page = client.get(f"/jobs/{running.uuid}/").content.decode()
    assert re.search(r'<form[^>]*job-cancel[^"]*"[^>]*data-confirm="Cancel[^"]*4242', page) or re.search(
        r'data-confirm="Cancel “[^"]*Slurm job 4242', page
    )


@pytest.mark.django_db
def test_someone_elses_job_cannot_be_polled(client, charlie, running):
    client.force_login(charlie)
    assert client.get(f"/jobs/{running.uuid}/?live=x", **HX).status_code == 404


@pytest.mark.django_db
def test_a_log_chunk_adds_nothing_of_its_own_to_the_log(client, alice, team):
    # The tail appends chunks one after another: a stray newline from the template would
    # split lines at every chunk boundary (and make an empty stream look non-empty).
    job = make_job(alice, team=team, status=Job.Status.QUEUED)
    client.force_login(alice)
    body = client.get(f"/jobs/{job.uuid}/logs/stdout/?offset=0").content.decode()
    assert not body.endswith("\n")


@pytest.mark.django_db
def test_an_unchanged_poll_reads_one_narrow_row_and_one_aggregate(
    client, alice, running, django_assert_max_num_queries
):
    # 200 open job pages poll every 3 s: "nothing changed" must not load the job's joins and
    # its whole timeline (bench/portal_load.py). Session, user, the job's live columns, the
    # timeline's count and last seq.
    client.force_login(alice)
    url = _poll_url(client.get(f"/jobs/{running.uuid}/").content.decode())
    with django_assert_max_num_queries(4) as queries:
        assert client.get(url, **HX).status_code == 204
    job_reads = [q["sql"] for q in queries.captured_queries if 'FROM "jobs_job"' in q["sql"]]
    assert len(job_reads) == 1 and '"jobs_job"."script"' not in job_reads[0] and "JOIN" not in job_reads[0]


@pytest.mark.django_db
def test_a_new_timeline_event_alone_makes_the_poll_render_the_timeline(client, alice, running):
    from apps.audit.services import audit_record

    client.force_login(alice)
    url = _poll_url(client.get(f"/jobs/{running.uuid}/").content.decode())
    audit_record(action="job.note", subject=running, actor=alice, after={"status": "running"})
    response = client.get(url, **HX)
    assert response.status_code == 200
    assert re.search(r'id="job-timeline"[^>]*hx-swap-oob="true"', response.content.decode())
    assert "job.note" in response.content.decode()
    # The poller it carries holds the new version: asked again, nothing changed.
    again = _poll_url(response.content.decode())
    assert client.get(again, **HX).status_code == 204


@pytest.mark.django_db
def test_the_metrics_answer_is_the_owners_alone(client, alice, charlie, running):
    client.force_login(alice)
    answer = client.get(f"/api/v1/jobs/{running.uuid}/metrics/")
    assert answer.status_code == 200 and answer.json() == {"run_id": running.mlflow_run_id, "metrics": {}}
    client.force_login(charlie)
    assert client.get(f"/api/v1/jobs/{running.uuid}/metrics/").status_code == 404


@pytest.mark.django_db
def test_an_unchanged_list_poll_reads_the_rows_and_not_the_page_around_them(
    client, alice, running, django_assert_max_num_queries
):
    # The list polls every 5 s: a 204 needs the page's rows, not the metric column's names
    # (200 jobs' metrics) nor the grants of the "new job" menu, which only a render shows.
    client.force_login(alice)
    page = client.get("/jobs/?status=running").content.decode()
    assert running.name in page
    url = re.search(r'id="live-jobs"[^>]*hx-get="([^"]+)"', page).group(1).replace("&amp;", "&")
    with django_assert_max_num_queries(8) as queries:
        assert client.get(url, **HX).status_code == 204
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    assert '"jobs_job"."metrics" AS "metrics"' not in sql and "clusters_clustergrant" not in sql
    Job.objects.filter(pk=running.pk).update(status=Job.Status.COMPLETED)
    changed = client.get(url, **HX)
    assert changed.status_code == 200 and 'id="job-rows"' in changed.content.decode()
