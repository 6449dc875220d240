"""A trigger whose worker died while starting its run (a push delivery, a poll's new head, a
schedule's fire) is re-driven by the next tick of the triggers task, the way jobs are: its
lease (apps.core.leases.work_lease) says whether a live worker is still at it, and the run is
keyed by the start, so exactly one run is ever made for it.

"Died" is a SystemExit raised mid-start: like SIGKILL it skips every ``except Exception``, so
what the database holds afterwards is what a killed worker leaves behind. The run then reads
its pipeline file on the real local cluster."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from apps.pipelines import services as pipeline_services
from apps.pipelines.models import PipelineRun
from apps.pipelines.triggers import services, tasks
from apps.pipelines.triggers.models import TriggerSettings, WebhookDelivery
from tests.other_worker import OtherWorker

from .conftest import push_body, signed_headers

pytestmark = [pytest.mark.slurm, pytest.mark.django_db]
D = WebhookDelivery.Outcome


class Killed(SystemExit):
    """The worker is gone: nothing after this line runs, no ``except Exception`` catches it."""


def die(*args, **kwargs):
    raise Killed("worker killed")


def later(seconds: int = 60):
    return timezone.now() + timedelta(seconds=seconds)


def _queued_delivery(client, pipeline, secret, commit, django_capture_on_commit_callbacks) -> WebhookDelivery:
    body = push_body(after=commit)
    with django_capture_on_commit_callbacks():  # the task is not run: this test plays the worker
        response = client.post(
            f"/hooks/pipelines/{pipeline.uuid}/",
            body,
            content_type="application/json",
            **signed_headers("github", secret, body, delivery="d-killed"),
        )
    assert response.status_code == 202, response.content
    return WebhookDelivery.objects.get(pipeline=pipeline)


def test_a_delivery_whose_worker_died_while_reading_the_cluster_is_started_once_by_the_next_tick(
    client, alice, cluster_pipeline, cluster_repo, monkeypatch, django_capture_on_commit_callbacks
):
    _, secret = services.webhook_secret_rotate(user=alice, pipeline=cluster_pipeline)
    delivery = _queued_delivery(
        client, cluster_pipeline, secret, cluster_repo.first_commit, django_capture_on_commit_callbacks
    )
    with monkeypatch.context() as m:
        m.setattr(pipeline_services, "_read_and_check", die)
        with pytest.raises(Killed):
            services.webhook_delivery_start(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.outcome == D.STARTING and not PipelineRun.objects.exists()  # stuck, as before the fix

    tasks.triggers_once(now=timezone.now())  # too fresh: its own worker may still be at it
    assert WebhookDelivery.objects.get(pk=delivery.pk).outcome == D.STARTING

    tasks.triggers_once(now=later())
    tasks.triggers_once(now=later())  # a tick run twice starts nothing more
    delivery.refresh_from_db()
    run = PipelineRun.objects.get(pipeline=cluster_pipeline)
    assert delivery.outcome == D.STARTED and delivery.run == run and delivery.attempts == 2
    assert (run.trigger, run.commit, run.delivery_id) == ("push", cluster_repo.first_commit, "d-killed")
    assert run.status == PipelineRun.Status.RUNNING and run.grant == cluster_pipeline.grant
    pipeline_services.pipeline_run_cancel(user=alice, run=run)


def test_a_delivery_whose_worker_died_after_recording_its_run_gets_that_run_not_a_second(
    client, alice, cluster_pipeline, cluster_repo, monkeypatch, django_capture_on_commit_callbacks
):
    _, secret = services.webhook_secret_rotate(user=alice, pipeline=cluster_pipeline)
    delivery = _queued_delivery(
        client, cluster_pipeline, secret, cluster_repo.first_commit, django_capture_on_commit_callbacks
    )
    real_record = pipeline_services._record_run

    def record_then_die(**kwargs):
        real_record(**kwargs)  # committed: the run exists
        raise Killed("worker killed")

    with monkeypatch.context() as m:
        m.setattr(pipeline_services, "_record_run", record_then_die)
        with django_capture_on_commit_callbacks(), pytest.raises(Killed):
            services.webhook_delivery_start(delivery_id=delivery.pk)
    first = PipelineRun.objects.get(pipeline=cluster_pipeline)
    assert WebhookDelivery.objects.get(pk=delivery.pk).outcome == D.STARTING

    # The re-drive must not read the cluster again: the keyed run is found first.
    with monkeypatch.context() as m:
        m.setattr(pipeline_services, "_read_and_check", die)
        tasks.triggers_once(now=later())
    delivery.refresh_from_db()
    assert delivery.outcome == D.STARTED and delivery.run == first
    assert PipelineRun.objects.filter(pipeline=cluster_pipeline).count() == 1
    pipeline_services.pipeline_run_cancel(user=alice, run=first)


@pytest.mark.postgres
def test_a_start_still_in_flight_is_left_alone_until_its_worker_dies(
    client, alice, cluster_pipeline, cluster_repo, django_capture_on_commit_callbacks
):
    if connection.vendor != "postgresql":
        pytest.skip("the lease that dies with its worker's connection is PostgreSQL's")
    _, secret = services.webhook_secret_rotate(user=alice, pipeline=cluster_pipeline)
    delivery = _queued_delivery(
        client, cluster_pipeline, secret, cluster_repo.first_commit, django_capture_on_commit_callbacks
    )
    WebhookDelivery.objects.filter(pk=delivery.pk).update(outcome=D.STARTING, attempts=1, claimed_at=timezone.now())
    worker = OtherWorker(services.delivery_lease_name(delivery.pk))  # alive, slow, starting it
    try:
        tasks.triggers_once(now=later())
        assert WebhookDelivery.objects.get(pk=delivery.pk).outcome == D.STARTING
        assert not PipelineRun.objects.exists()
    finally:
        worker.die()
    tasks.triggers_once(now=later())
    delivery.refresh_from_db()
    assert delivery.outcome == D.STARTED and PipelineRun.objects.filter(pipeline=cluster_pipeline).count() == 1
    pipeline_services.pipeline_run_cancel(user=alice, run=delivery.run)


def test_a_schedule_whose_worker_died_mid_fire_starts_its_run_once(alice, cluster_pipeline, cluster_repo, monkeypatch):
    schedule = services.schedule_create(user=alice, pipeline=cluster_pipeline, cron_expression="*/5 * * * *")
    due = schedule.next_fire_at + timedelta(seconds=1)
    with monkeypatch.context() as m:
        m.setattr(services, "_start_run", die)
        with pytest.raises(Killed):
            services.schedules_due(now=due)
    schedule.refresh_from_db()
    assert schedule.pending and not PipelineRun.objects.exists()
    assert schedule.next_fire_at > due  # claimed: schedules_due alone would never fire it again

    tasks.triggers_once(now=due + timedelta(seconds=60))
    tasks.triggers_once(now=due + timedelta(seconds=61))
    run = PipelineRun.objects.get(pipeline=cluster_pipeline)
    assert (run.trigger, run.commit) == ("schedule", cluster_repo.first_commit)
    assert run.trigger_detail["schedule"] == str(schedule.uuid)
    schedule.refresh_from_db()
    assert schedule.pending == {} and schedule.last_run == run
    pipeline_services.pipeline_run_cancel(user=alice, run=run)


def test_a_poll_whose_worker_died_before_starting_the_new_head_starts_it_once(
    alice, cluster_pipeline, cluster_repo, monkeypatch
):
    services.polling_set(user=alice, pipeline=cluster_pipeline, enabled=True, interval_minutes=1)
    services.polls_due()  # the first poll notes the head
    new = cluster_repo.commit({"more.txt": "more\n"}, "more")
    now = timezone.now() + timedelta(minutes=2)
    with monkeypatch.context() as m:
        m.setattr(services, "_start_run", die)
        with pytest.raises(Killed):
            services.polls_due(now=now)
    row = TriggerSettings.objects.get(pipeline=cluster_pipeline)
    assert row.last_seen_commit == new and row.poll_pending["commit"] == new
    assert not PipelineRun.objects.exists()  # the head is taken: the next poll sees nothing new

    tasks.triggers_once(now=now + timedelta(seconds=30))
    tasks.triggers_once(now=now + timedelta(seconds=31))
    run = PipelineRun.objects.get(pipeline=cluster_pipeline)
    assert (run.trigger, run.commit) == ("poll", new)
    assert TriggerSettings.objects.get(pk=row.pk).poll_pending == {}
    pipeline_services.pipeline_run_cancel(user=alice, run=run)
