"""The job page's live regions (apps.core.live): a poll costs nothing while nothing changed,
and re-renders every state-dependent part when something did."""

import html
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
    version = re.search(r'data-live-version="([^"]+)"', page).group(1)
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
    # The tail appends each answer's text to its stream: an answer with no text appends
    # nothing (a stray newline would split lines at every chunk boundary and make an empty
    # stream look non-empty); what it has to say goes in the stream's note, which the next
    # answer replaces.
    job = make_job(alice, team=team, status=Job.Status.QUEUED)
    client.force_login(alice)
    body = client.get(f"/jobs/{job.uuid}/logs/?stdout=0&stderr=0").content.decode()
    assert 'hx-swap-oob="beforebegin:' not in body
    for stream in ("stdout", "stderr"):
        note = rf'id="log-{stream}-end" hx-swap-oob="true"><span class="log-note muted">\[The job has not'
        assert re.search(note, body)


@pytest.mark.django_db
def test_an_unchanged_poll_reads_one_narrow_row(client, alice, running, django_assert_max_num_queries):
    # 200 open job pages poll every 5 s: "nothing changed" must not load the job's joins and
    # its whole timeline (bench/portal_load.py). Session, user, and one statement for the
    # job's live columns with its timeline's last seq; a job without an MLflow run asks
    # MLflow nothing.
    client.force_login(alice)
    url = _poll_url(client.get(f"/jobs/{running.uuid}/").content.decode())
    with django_assert_max_num_queries(3) as queries:
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


def _curves(body: str) -> str:
    return re.search(r'id="job-metrics-summary" data-curves="([^"]*)"', body).group(1)


@pytest.mark.django_db
def test_a_job_page_polls_every_5_s_and_a_job_without_a_run_has_no_curves_to_fetch(client, alice, running):
    client.force_login(alice)
    page = client.get(f"/jobs/{running.uuid}/").content.decode()
    assert re.search(r'id="live-job"[^>]*hx-trigger="every 5s"', page), "the tracking loop's cadence"
    assert _curves(page) == "", "no MLflow run: the chart asks nothing"


@pytest.mark.django_db
def test_an_ended_job_whose_run_is_mirrored_shows_final_curves_without_asking_mlflow(client, alice, team, monkeypatch):
    from django.utils import timezone

    from apps.jobs import tracking

    monkeypatch.setattr(tracking, "latest_metrics", lambda job: pytest.fail("MLflow asked for a final run"))
    job = make_job(alice, team=team, mlflow_run_id="f" * 32, finalized_at=timezone.now())
    client.force_login(alice)
    assert _curves(client.get(f"/jobs/{job.uuid}/").content.decode()) == "final"


@pytest.mark.django_db
def test_while_mlflow_is_unreachable_the_poll_still_answers_204(client, alice, running, monkeypatch):
    from apps.integrations.mlflow.base import MlflowUnavailable
    from apps.jobs import tracking

    def unreachable(job):
        raise MlflowUnavailable("MLflow did not answer within 3s.")

    monkeypatch.setattr(tracking, "latest_metrics", unreachable)
    Job.objects.filter(pk=running.pk).update(mlflow_run_id="u" * 32)
    client.force_login(alice)
    page = client.get(f"/jobs/{running.uuid}/").content.decode()
    assert _curves(page) == "unavailable", "the chart fetches once and says MLflow could not be reached"
    assert client.get(_poll_url(page), **HX).status_code == 204


@pytest.mark.django_db
@pytest.mark.mlflow
def test_new_metric_points_alone_make_the_poll_carry_a_new_curves_version_and_nothing_else(client, alice, running):
    from apps.integrations.mlflow.base import MetricPoint
    from apps.jobs import tracking

    mlflow = tracking.client()
    experiment_id = mlflow.ensure_experiment("axle-tests-live-page")
    run_id = mlflow.create_run(experiment_id, "live-curves")
    mlflow.log_metrics(run_id, [MetricPoint("loss", 1.0, 1_700_000_000_000, 0)])
    Job.objects.filter(pk=running.pk).update(mlflow_run_id=run_id, mlflow_experiment_id=experiment_id)
    client.force_login(alice)
    page = client.get(f"/jobs/{running.uuid}/").content.decode()
    url = _poll_url(page)
    assert client.get(url, **HX).status_code == 204, "no new point: one request, nothing to fetch"

    mlflow.log_metrics(run_id, [MetricPoint("loss", 0.5, 1_700_000_001_000, 1)])
    response = client.get(url, **HX)
    body = response.content.decode()
    assert response.status_code == 200
    assert _curves(body) not in ("", _curves(page)), "the chart sees a new version and fetches the history"
    assert re.search(r'id="job-metrics-summary"[^>]*hx-swap-oob="true"', body)
    assert "job-timeline" not in body and "job-status" not in body, "the regions did not change"
    assert client.get(_poll_url(body), **HX).status_code == 204


@pytest.mark.django_db
def test_the_live_head_reads_what_the_orm_reads_and_the_timelines_last_event(alice, charlie, running):
    from apps.audit.models import AuditEvent
    from apps.audit.services import audit_record
    from apps.core.errors import NotFound
    from apps.jobs import selectors

    Job.objects.filter(pk=running.pk).update(metrics={"loss": 0.25}, accounting={"elapsed_seconds": 60}, exit_code=3)
    head = selectors.job_live_head(user=alice, job_id=running.uuid)
    full = Job.objects.get(pk=running.pk)
    for name in selectors.JOB_LIVE_FIELDS:
        assert getattr(head, name) == getattr(full, name), name
    assert head.last_event_seq is None
    audit_record(action="job.note", subject=running, actor=alice, after={"status": "running"})
    last = AuditEvent.objects.filter(subject_id=str(running.uuid)).order_by("-seq").first()
    assert selectors.job_live_head(user=alice, job_id=str(running.uuid)).last_event_seq == last.seq
    with pytest.raises(NotFound):
        selectors.job_live_head(user=charlie, job_id=running.uuid)
    with pytest.raises(NotFound):
        selectors.job_live_head(user=alice, job_id="not-a-uuid")


@pytest.mark.django_db
def test_a_job_that_has_not_started_asks_mlflow_nothing_for_its_curves(client, alice, team, monkeypatch):
    from apps.jobs import tracking

    monkeypatch.setattr(tracking, "latest_metrics", lambda job: pytest.fail("MLflow asked before the job ran"))
    job = make_job(alice, team=team, status=Job.Status.PENDING, slurm_job_id="99", mlflow_run_id="p" * 32)
    client.force_login(alice)
    page = client.get(f"/jobs/{job.uuid}/").content.decode()
    assert _curves(page) == "not-started"
    assert client.get(_poll_url(page), **HX).status_code == 204


class _FlakyMlflow:
    """tracking.client() stand-in: counts get_run calls; raises MlflowUnavailable while down."""

    def __init__(self):
        self.calls = 0
        self.down = True

    def get_run(self, run_id):
        from types import SimpleNamespace

        from apps.integrations.mlflow.base import MetricPoint, MlflowUnavailable

        self.calls += 1
        if self.down:
            raise MlflowUnavailable("MLflow did not answer within 3s.")
        return SimpleNamespace(metrics={"loss": MetricPoint("loss", 0.5, 1_700_000_001_000, 3)})


@pytest.mark.django_db
def test_after_mlflow_did_not_answer_the_polls_of_the_next_seconds_do_not_wait_for_it(
    client, alice, running, monkeypatch
):
    from apps.jobs import tracking

    mlflow = _FlakyMlflow()
    monkeypatch.setattr(tracking, "client", lambda **kw: mlflow)
    now = [1000.0]
    monkeypatch.setattr(tracking.time, "monotonic", lambda: now[0])
    Job.objects.filter(pk=running.pk).update(mlflow_run_id="u" * 32)
    client.force_login(alice)
    page = client.get(f"/jobs/{running.uuid}/").content.decode()
    assert _curves(page) == "unavailable" and mlflow.calls == 1
    url = _poll_url(page)
    for _ in range(3):  # a hanging MLflow would hold a portal thread 3 s for each of these
        now[0] += 2
        assert client.get(url, **HX).status_code == 204
    assert mlflow.calls == 1, "within LIVE_BREAKER_SECONDS the polls answer without asking MLflow"

    mlflow.down = False
    now[0] += tracking.LIVE_BREAKER_SECONDS
    response = client.get(url, **HX)
    assert mlflow.calls == 2, "once the pause is over a poll asks again"
    assert response.status_code == 200
    assert _curves(response.content.decode()) not in ("", "unavailable"), "the chart fetches the history again"
    now[0] += 5
    assert client.get(_poll_url(response.content.decode()), **HX).status_code == 204
    assert mlflow.calls == 3, "MLflow answers: every poll asks it, as before"


@pytest.mark.django_db
def test_an_mlflow_that_answers_with_a_refusal_ends_the_pause(running, monkeypatch):
    """The call that asks again after the pause gets MLflow's refusal (a deleted run): MLflow
    answers, so the next calls ask it at once instead of waiting out a longer pause."""
    from apps.integrations.mlflow.base import MlflowError, MlflowUnavailable
    from apps.jobs import tracking

    mlflow = _FlakyMlflow()
    monkeypatch.setattr(tracking, "client", lambda **kw: mlflow)
    job = Job.objects.get(pk=running.pk)
    job.mlflow_run_id = "d" * 32
    now = [1000.0]
    monkeypatch.setattr(tracking.time, "monotonic", lambda: now[0])
    with pytest.raises(MlflowUnavailable):
        tracking.latest_metrics(job)  # down: the pause starts
    now[0] += tracking.LIVE_BREAKER_SECONDS + 1

    def refused(run_id):
        mlflow.calls += 1
        raise MlflowError("MLflow refused reading a run: no such run", status=404, code="RESOURCE_DOES_NOT_EXIST")

    mlflow.get_run = refused
    with pytest.raises(MlflowError):
        tracking.latest_metrics(job)  # the probe: MLflow answered
    with pytest.raises(MlflowError) as again:
        tracking.latest_metrics(job)  # at the same moment: asked, not paused
    assert not isinstance(again.value, MlflowUnavailable)
    assert mlflow.calls == 3


@pytest.mark.django_db
def test_the_mlflow_pause_is_per_tracking_server(client, alice, running, monkeypatch, settings):
    from apps.jobs import tracking

    mlflow = _FlakyMlflow()
    monkeypatch.setattr(tracking, "client", lambda **kw: mlflow)
    job = Job.objects.get(pk=running.pk)
    job.mlflow_run_id = "u" * 32
    from apps.jobs import selectors

    assert selectors.job_curves_version(job=job) == "unavailable"
    assert selectors.job_curves_version(job=job) == "unavailable"
    assert mlflow.calls == 1
    settings.AXLE_MLFLOW_TRACKING_URI = "http://another-mlflow.invalid:5000"
    mlflow.down = False
    assert selectors.job_curves_version(job=job) not in ("", "unavailable")
    assert mlflow.calls == 2


def _appended(body: str) -> dict[str, str]:
    """What an answer of the log tail puts at the end of each stream."""
    found = re.finditer(r'<span hx-swap-oob="beforebegin:#log-(\w+)-end">(.*?)</span>', body, re.S)
    return {m.group(1): html.unescape(m.group(2)) for m in found}


def _next_read(body: str) -> tuple[str, str]:
    """The log tail's next request: its URL and its htmx trigger."""
    match = re.search(r'class="log-more" hx-get="([^"]+)" hx-trigger="([^"]+)"', body)
    assert match, "the tail goes on"
    return match.group(1).replace("&amp;", "&"), match.group(2)


@pytest.mark.django_db
def test_a_running_jobs_log_tail_waits_after_new_text_and_slows_down_on_a_quiet_stream(
    client, alice, running, monkeypatch
):
    from apps.jobs import selectors

    log = {"text": b"epoch 1\n"}

    def read(*, job, offsets, task=None, limit=selectors.LOG_CHUNK):
        assert list(offsets) == ["stdout"]
        data = log["text"][offsets["stdout"] : offsets["stdout"] + limit]
        return {"stdout": selectors.LogChunk(data.decode(), offsets["stdout"] + len(data))}

    monkeypatch.setattr(selectors, "job_logs_read", read)
    client.force_login(alice)
    url, trigger = _next_read(client.get(f"/jobs/{running.uuid}/logs/?stdout=0").content.decode())
    # New text that reached the end of the file: the next read a few seconds later, not at once
    # (a job printing steadily made its page read in a loop, an SSH command per round trip).
    assert trigger == "load delay:5s"
    triggers = []
    for _ in range(7):  # nothing new: 5 s at first, then 6 s on a stream that stays quiet
        url, trigger = _next_read(client.get(url).content.decode())
        triggers.append(trigger)
    assert triggers == ["load delay:5s"] * 4 + ["load delay:6s"] * 3
    log["text"] += b"epoch 2\n"
    body = client.get(url).content.decode()
    assert _appended(body) == {"stdout": "epoch 2\n"}
    url, trigger = _next_read(body)
    assert trigger == "load delay:5s", "a line written: back to reading every 5 s"
    assert _next_read(client.get(url).content.decode())[1] == "load delay:5s"


@pytest.mark.django_db
def test_a_log_tail_reads_on_at_once_after_a_whole_chunk_and_for_a_finished_job(client, alice, running, monkeypatch):
    from apps.jobs import selectors

    monkeypatch.setattr(selectors, "LOG_CHUNK", 16)
    text = b"0123456789" * 5

    def read(*, job, offsets, task=None, limit=None):
        chunks = {}
        for stream, offset in offsets.items():
            data = text[offset : offset + selectors.LOG_CHUNK] if stream == "stdout" else b""
            chunks[stream] = selectors.LogChunk(data.decode(), offset + len(data))
        return chunks

    monkeypatch.setattr(selectors, "job_logs_read", read)
    client.force_login(alice)
    url, trigger = _next_read(client.get(f"/jobs/{running.uuid}/logs/?stdout=0&stderr=0").content.decode())
    assert trigger == "load", "a whole chunk: the rest is waiting, read it at once"
    assert "stdout=16&stderr=0" in url
    Job.objects.filter(pk=running.pk).update(status=Job.Status.COMPLETED)
    body = client.get(f"/jobs/{running.uuid}/logs/?stdout=48&stderr=0").content.decode()
    url, trigger = _next_read(body)
    assert "stdout=50&" in url and "stderr" not in url, "the finished job's empty stream is done"
    assert trigger == "load", "a finished job's log is read to its end at once"
    assert "log-more" not in client.get(url).content.decode(), "and then the tail stops"


@pytest.mark.django_db
def test_one_request_reads_both_streams_through_one_connection(client, alice, running, monkeypatch):
    # 200 open job pages asked ~100 log reads a second, two requests per tick (one per stream):
    # now one request per tick reads both, over one connection taken from the pool once.
    from contextlib import contextmanager

    from apps.integrations.slurm.base import RemoteFileMissing
    from apps.jobs import selectors

    files = {selectors.job_log_path(running, "stdout"): b"epoch 1\n<b>loss</b>\n"}
    taken, reads = [], []

    class Files:
        def read(self, path, offset, limit):
            reads.append((path, offset))
            if path not in files:
                raise RemoteFileMissing(path)
            data = files[path][offset : offset + limit]
            return data, offset + len(data)

    class Client:
        files = Files()

    @contextmanager
    def slurm_client(grant):
        taken.append(grant)
        yield Client()

    monkeypatch.setattr(selectors, "slurm_client", slurm_client)
    client.force_login(alice)
    page = client.get(f"/jobs/{running.uuid}/").content.decode()
    first = re.search(r'<span id="log-tail" hx-get="([^"]+)" hx-trigger="load"', page).group(1)
    body = client.get(html.unescape(first)).content.decode()
    assert (len(taken), len(reads)) == (1, 2)
    assert _appended(body) == {"stdout": "epoch 1\n<b>loss</b>\n"}, "the text of each stream, escaped, to its own end"
    assert "<b>" not in body
    # No stderr file yet: its end says so until the next answer replaces it.
    assert re.search(r'id="log-stderr-end" hx-swap-oob="true"><span class="log-note muted">\[No log yet', body)
    url, trigger = _next_read(body)
    assert "stdout=20&stderr=0&" in url and trigger == "load delay:5s"
    files[selectors.job_log_path(running, "stderr")] = b"warning\n"
    body = client.get(url).content.decode()
    assert _appended(body) == {"stderr": "warning\n"}
    assert re.search(r'id="log-stderr-end" hx-swap-oob="true"></span>', body)
    assert (len(taken), len(reads)) == (2, 4)
    # The job ended: what is left of each stream is read, then the tail stops.
    Job.objects.filter(pk=running.pk).update(status=Job.Status.COMPLETED)
    url, trigger = _next_read(body)
    body = client.get(url).content.decode()
    assert _appended(body) == {} and "log-tail" not in body


@pytest.mark.django_db
def test_a_log_read_reads_the_job_grant_and_cluster_in_one_query(
    client, alice, charlie, running, monkeypatch, django_assert_max_num_queries
):
    from apps.clusters import transport
    from apps.jobs import selectors

    seen = {}

    def read(*, job, offsets, task=None, limit=None):
        # What the read uses (the grant's connection, the log's path) is there already.
        with django_assert_max_num_queries(0):
            seen["key"] = transport._key(job.grant)
            seen["path"] = selectors.job_log_path(job, "stdout")
            seen["cluster"] = job.cluster.name
        return {stream: selectors.LogChunk("line\n", offset + 5) for stream, offset in offsets.items()}

    monkeypatch.setattr(selectors, "job_logs_read", read)
    client.force_login(alice)
    url = f"/jobs/{running.uuid}/logs/?stdout=0&stderr=0"
    client.get(url)  # the session's first request may write it
    with django_assert_max_num_queries(3) as queries:  # session, user, the job with grant and cluster
        body = client.get(url).content.decode()
    assert _appended(body) == {"stdout": "line\n", "stderr": "line\n"} and seen["cluster"] == running.cluster.name
    # Narrow: the cluster joined once (the grant's is the job's), not the job's script, no ordering.
    (read,) = [q["sql"] for q in queries.captured_queries if 'FROM "jobs_job"' in q["sql"]]
    assert read.count('"clusters_cluster"."host_key"') == 1 and '"jobs_job"."script"' not in read
    assert "ORDER BY" not in read
    assert seen["path"] == selectors.job_log_path(running, "stdout")
    client.force_login(charlie)
    assert client.get(url).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("permanent", [False, True])
def test_a_running_jobs_log_tail_tries_again_after_a_failure_that_may_pass(
    client, alice, running, monkeypatch, permanent
):
    from apps.integrations.slurm.base import TransportError
    from apps.jobs import selectors

    failing = [True]

    class Files:
        def read(self, path, offset, limit):
            if failing[0]:
                raise TransportError("Error reading SSH protocol banner", permanent=permanent)
            return b"back\n", offset + 5

    class Client:
        files = Files()

    from contextlib import contextmanager

    @contextmanager
    def slurm_client(grant):
        yield Client()

    monkeypatch.setattr(selectors, "slurm_client", slurm_client)
    client.force_login(alice)
    body = client.get(f"/jobs/{running.uuid}/logs/?stdout=0").content.decode()
    assert "Error reading SSH protocol banner" in body
    if permanent:  # no login host, no key: asking again cannot help, the tail stops as before
        assert "log-more" not in body
        return
    url, trigger = _next_read(body)
    assert trigger == "load delay:10s"
    # The note is in the stream's end, which the next answer replaces: it goes once the cluster answers.
    assert re.search(r'id="log-stdout-end" hx-swap-oob="true"><span class="log-note error">\[[^<]*Trying again', body)
    failing[0] = False
    body = client.get(url).content.decode()
    assert _appended(body) == {"stdout": "back\n"} and "error" not in body
    assert re.search(r'id="log-stdout-end" hx-swap-oob="true"></span>', body)


@pytest.mark.django_db
def test_while_mlflow_is_paused_the_artifacts_list_and_the_charts_history_answer_at_once_too(
    client, alice, running, monkeypatch
):
    from apps.jobs import tracking

    mlflow = _FlakyMlflow()
    listed = []

    def list_artifacts(run_id, path=""):
        listed.append(path)
        return []

    mlflow.list_artifacts = list_artifacts
    timeouts = []

    def make_client(**kw):
        timeouts.append(kw.get("timeout"))
        return mlflow

    monkeypatch.setattr(tracking, "client", make_client)
    now = [1000.0]
    monkeypatch.setattr(tracking.time, "monotonic", lambda: now[0])
    Job.objects.filter(pk=running.pk).update(mlflow_run_id="u" * 32)
    client.force_login(alice)
    client.get(f"/jobs/{running.uuid}/")  # its curves version found MLflow unavailable
    body = client.get(f"/jobs/{running.uuid}/artifacts/").content.decode()
    assert listed == [], "the artifacts list did not wait for an MLflow found down a moment ago"
    assert "MLflow could not be reached" in body
    calls = mlflow.calls
    answer = client.get(f"/api/v1/jobs/{running.uuid}/metrics/", HTTP_ACCEPT="application/json")
    assert answer.status_code == 503 and mlflow.calls == calls, "nor did the charts' history"
    mlflow.down = False
    now[0] += tracking.LIVE_BREAKER_SECONDS + tracking.LIVE_TIMEOUT + 1
    client.get(f"/jobs/{running.uuid}/artifacts/")
    assert listed == [""], "after the pause it asks"
    assert timeouts[-1] == tracking.ARTIFACTS_TIMEOUT


@pytest.mark.django_db
def test_when_the_mlflow_pause_ends_one_call_asks_and_the_others_answer_at_once_while_it_waits(running, monkeypatch):
    import threading

    from apps.integrations.mlflow.base import MlflowUnavailable
    from apps.jobs import tracking

    mlflow = _FlakyMlflow()
    monkeypatch.setattr(tracking, "client", lambda **kw: mlflow)
    job = Job.objects.get(pk=running.pk)
    job.mlflow_run_id = "u" * 32
    now = [1000.0]
    monkeypatch.setattr(tracking.time, "monotonic", lambda: now[0])
    with pytest.raises(MlflowUnavailable):
        tracking.latest_metrics(job)  # MLflow found down: the pause starts
    now[0] += tracking.LIVE_BREAKER_SECONDS + 1  # and is over
    inside, release = threading.Event(), threading.Event()

    def hanging_get_run(run_id):
        mlflow.calls += 1
        inside.set()
        release.wait(5)  # a hanging MLflow, until the call's timeout
        raise MlflowUnavailable("MLflow did not answer within 30s.")

    mlflow.get_run = hanging_get_run
    # The charts' history probes: it may wait its whole timeout (30 s), longer than a poll's.
    probed = []

    def probing():
        try:
            tracking.metric_history(job)
        except Exception as exc:  # noqa: BLE001 - asserted below, in the test's thread
            probed.append(exc)

    probe = threading.Thread(target=probing)
    probe.start()
    assert inside.wait(5)
    for _ in range(3):  # meanwhile every other call answers at once, without asking
        now[0] += tracking.LIVE_TIMEOUT + tracking.LIVE_BREAKER_SECONDS
        with pytest.raises(MlflowUnavailable):
            tracking.latest_metrics(job)
        assert mlflow.calls == 2, "a hanging MLflow holds one portal thread, not one more per poll"
    release.set()
    probe.join(5)
    assert [type(e) for e in probed] == [MlflowUnavailable]


@pytest.mark.django_db
def test_a_stream_that_cannot_be_read_ends_alone_and_the_other_goes_on(client, alice, running, monkeypatch):
    # Both streams are read in one request: a file the cluster cannot read (a folder, an I/O
    # error) ends that stream's tail with its reason; the other stream is still read and tailed.
    from contextlib import contextmanager

    from apps.integrations.slurm.base import RemoteCommandFailed
    from apps.jobs import selectors

    out, err = selectors.job_log_path(running, "stdout"), selectors.job_log_path(running, "stderr")
    reads, closed = [], []

    class Files:
        def read(self, path, offset, limit):
            reads.append(path)
            if path == out:
                raise RemoteCommandFailed(f"Could not read {path}: Is a directory")
            return b"warning\n"[offset:], 8

    class Client:
        files = Files()

    @contextmanager
    def slurm_client(grant):
        try:
            yield Client()
        except BaseException:
            closed.append(grant)  # what the pool does: a failure drops the connection
            raise

    monkeypatch.setattr(selectors, "slurm_client", slurm_client)
    client.force_login(alice)
    body = client.get(f"/jobs/{running.uuid}/logs/?stdout=0&stderr=0").content.decode()
    assert reads == [out, err] and closed == []
    assert _appended(body) == {"stderr": "warning\n"}
    assert re.search(r'id="log-stdout-end" hx-swap-oob="true"><span class="log-note error">[^<]*Is a directory', body)
    url, _ = _next_read(body)
    assert "stderr=8" in url and "stdout=" not in url, "stdout's tail ended, stderr's goes on"
