"""The jobs list as a runs table (sort, filters, metric column, bulk actions) and compare."""

import datetime
import re

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.jobs.models import Job
from tests.factories import ClusterFactory, ClusterGrantFactory
from tests.registry.conftest import make_job

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def grant(alice):
    return ClusterGrantFactory(user=alice, cluster=ClusterFactory(name="hpc"))


def names_in(page: str) -> list[str]:
    return re.findall(r'<td data-label="Name"><a href="/jobs/[^"]+/">([^<]+)</a>', page)


@pytest.mark.django_db
def test_the_list_sorts_by_a_chosen_metric_column_with_missing_values_last(client, alice, team, grant):
    make_job(alice, team=team, grant=grant, name="mid", metrics={"accuracy": 0.9123456789})
    make_job(alice, team=team, grant=grant, name="none")
    make_job(alice, team=team, grant=grant, name="high", metrics={"accuracy": 0.97})
    make_job(alice, team=team, grant=grant, name="low", metrics={"accuracy": 0.5})
    client.force_login(alice)
    page = client.get("/jobs/?metric=accuracy&sort=-metric").content.decode()
    assert names_in(page) == ["high", "mid", "low", "none"]
    assert '<option value="accuracy" selected>' in page
    # Rounded to 4 significant digits, the full value on hover.
    assert '<span class="num" title="0.9123456789">0.9123</span>' in page
    assert names_in(client.get("/jobs/?metric=accuracy&sort=metric").content.decode()) == [
        "low",
        "mid",
        "high",
        "none",
    ]
    assert names_in(client.get("/jobs/?sort=name").content.decode()) == ["high", "low", "mid", "none"]


@pytest.mark.django_db
def test_the_list_shows_elapsed_time_and_sorts_by_it(client, alice, team, grant):
    now = timezone.now()
    make_job(
        alice, team=team, grant=grant, name="short", started_at=now - datetime.timedelta(seconds=42), finished_at=now
    )
    make_job(
        alice, team=team, grant=grant, name="long", started_at=now - datetime.timedelta(minutes=65), finished_at=now
    )
    client.force_login(alice)
    page = client.get("/jobs/?sort=-elapsed").content.decode()
    assert names_in(page) == ["long", "short"]
    assert "1 h 05 min" in page and "42 s" in page


@pytest.mark.django_db
def test_the_list_filters_by_state_cluster_and_date(client, alice, team, grant):
    other = ClusterGrantFactory(user=alice, cluster=ClusterFactory(name="gpu"))
    make_job(alice, team=team, grant=grant, name="done-hpc")
    make_job(alice, team=team, grant=other, name="done-gpu")
    make_job(alice, team=team, grant=grant, name="running-hpc", status=Job.Status.RUNNING)
    old = make_job(alice, team=team, grant=grant, name="old-hpc")
    Job.objects.filter(pk=old.pk).update(created_at=timezone.now() - datetime.timedelta(days=40))
    client.force_login(alice)
    assert names_in(client.get("/jobs/?status=running").content.decode()) == ["running-hpc"]
    assert names_in(client.get("/jobs/?cluster=gpu").content.decode()) == ["done-gpu"]
    since = (timezone.now() - datetime.timedelta(days=2)).date().isoformat()
    assert "old-hpc" not in names_in(client.get(f"/jobs/?since={since}").content.decode())
    until = (timezone.now() - datetime.timedelta(days=30)).date().isoformat()
    assert names_in(client.get(f"/jobs/?until={until}").content.decode()) == ["old-hpc"]
    assert "match these filters" in client.get("/jobs/?status=failed").content.decode()


@pytest.mark.django_db
def test_the_list_rows_refresh_only_when_a_state_changed(client, alice, team, grant):
    job = make_job(alice, team=team, grant=grant, name="j", status=Job.Status.PENDING)
    client.force_login(alice)
    page = client.get("/jobs/").content.decode()
    url = re.search(r'id="live-jobs"[^>]*hx-get="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert client.get(url, **HX).status_code == 204
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING)
    answer = client.get(url, **HX).content.decode()
    assert '<tbody id="job-rows" hx-swap-oob="true">' in answer and 'data-status="running"' in answer
    # A ticked row stays ticked through the refresh.
    assert f'id="sel-{job.uuid}" hx-preserve="true"' in answer


@pytest.mark.django_db
def test_bulk_cancel_cancels_the_selected_queued_jobs_and_says_why_not_for_ended_ones(client, alice, team, grant):
    queued = [make_job(alice, team=team, grant=grant, status=Job.Status.QUEUED) for _ in range(2)]
    ended = make_job(alice, team=team, grant=grant, status=Job.Status.COMPLETED, slurm_job_id="99")
    untouched = make_job(alice, team=team, grant=grant, status=Job.Status.QUEUED)
    client.force_login(alice)
    response = client.post(
        "/jobs/bulk/", {"action": "cancel", "id": [str(j.uuid) for j in [*queued, ended]]}, follow=True
    )
    page = response.content.decode()
    assert "Cancellation sent for 2 jobs" in page and "already ended" in page
    for job in queued:
        job.refresh_from_db()
        assert job.status == Job.Status.CANCELLED
        assert AuditEvent.objects.filter(action="job.cancelled", subject_id=str(job.uuid)).exists()
    untouched.refresh_from_db()
    assert untouched.status == Job.Status.QUEUED


@pytest.mark.django_db
def test_bulk_actions_touch_only_the_users_own_jobs(client, alice, charlie, team, grant):
    job = make_job(alice, team=team, grant=grant, status=Job.Status.QUEUED)
    client.force_login(charlie)
    client.post("/jobs/bulk/", {"action": "cancel", "id": [str(job.uuid)]})
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED


@pytest.mark.django_db
def test_bulk_compare_opens_compare_with_the_selected_jobs(client, alice, team, grant):
    a, b = make_job(alice, team=team, grant=grant), make_job(alice, team=team, grant=grant)
    client.force_login(alice)
    response = client.post("/jobs/bulk/", {"action": "compare", "id": [str(a.uuid), str(b.uuid)]})
    assert response.status_code == 302 and response["Location"] == f"/jobs/compare/?ids={a.uuid},{b.uuid}"


@pytest.mark.django_db
def test_compare_diffs_inputs_and_shows_metric_differences(client, alice, team, grant):
    a = make_job(
        alice,
        team=team,
        grant=grant,
        name="same",
        slurm_job_id="101",
        parameters={"LR": "0.1"},
        metrics={"loss": 0.123456},
        script="#!/bin/bash\necho one\n",
        code_repo="/git/x",
        code_commit="a" * 40,
    )
    b = make_job(
        alice,
        team=team,
        grant=grant,
        name="same",
        slurm_job_id="102",
        parameters={"LR": "0.2"},
        metrics={"loss": 0.1},
        script="#!/bin/bash\necho two\n",
        code_repo="/git/x",
        code_commit="b" * 40,
    )
    client.force_login(alice)
    page = client.get(f"/jobs/compare/?ids={a.uuid},{b.uuid}").content.decode()
    # Same-named jobs are told apart by Slurm id and time, in the picker as in the headers.
    assert "<code>101</code>" in page and "<code>102</code>" in page and "<time " in page
    assert re.search(f'id="cmp-{a.uuid}" checked', page) and re.search(f'id="cmp-{b.uuid}" checked', page)
    assert "<select" not in page, "no Ctrl-click multi-select list"
    assert re.search(r"<th>param LR</th><td[^>]*differs", page)
    assert re.search(r"<th>Code commit</th><td[^>]*differs", page)
    assert "-echo one" in page and "+echo two" in page, "the script is diffed"
    assert '<span class="num" title="0.123456">0.1235</span>' in page
    assert "(-0.02346)" in page, "the difference to the first job"
    assert page.count("/api/v1/jobs/") >= 2, "each run's curve is fetched for the overlay"
