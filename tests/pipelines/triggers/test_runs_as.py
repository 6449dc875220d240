"""Whose grant a run runs as. A run a person starts runs as that person's own active grant on
the pipeline's cluster (a teammate's run is never the owner's); a trigger's runs run as the
grant of the member who set the trigger up, checked again each time it fires: a grant
suspended or expired since refuses the start, audited, and nothing runs."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.models import Membership
from apps.audit.models import AuditEvent
from apps.clusters.models import ClusterGrant
from apps.core.errors import PermissionDenied
from apps.jobs.models import Job
from apps.pipelines import services as pipeline_services
from apps.pipelines.models import PipelineRun
from apps.pipelines.triggers import services
from apps.pipelines.triggers.models import TriggerSettings, WebhookDelivery
from tests.factories import ClusterGrantFactory
from tests.local_cluster import make_local_grant

from .conftest import push_body, signed_headers

D = WebhookDelivery.Outcome


def _suspend(grant: ClusterGrant) -> None:
    ClusterGrant.objects.filter(pk=grant.pk).update(status=ClusterGrant.Status.SUSPENDED)


def _deliver(client, pipeline, secret, django_capture_on_commit_callbacks) -> WebhookDelivery:
    body = push_body()
    with django_capture_on_commit_callbacks():
        response = client.post(
            f"/hooks/pipelines/{pipeline.uuid}/",
            body,
            content_type="application/json",
            **signed_headers("gitea", secret, body),
        )
    assert response.status_code == 202, response.content
    return WebhookDelivery.objects.get(pipeline=pipeline)


# ---------------------------------------------------------------- a person's run (no cluster)


@pytest.mark.django_db
def test_a_teammate_without_a_grant_is_refused_with_a_clear_message(client, bob, pipeline):
    with pytest.raises(PermissionDenied) as refused:
        pipeline_services.pipeline_run_start(pipeline=pipeline, actor=bob, trigger="user")
    assert "bob has no active grant on cluster hpc" in refused.value.message
    assert "runs as the grant of whoever starts it" in refused.value.message
    client.force_login(bob)
    response = client.post(f"/pipelines/{pipeline.uuid}/run/", follow=True)
    assert "bob has no active grant on cluster hpc" in response.content.decode()
    assert not PipelineRun.objects.exists()


@pytest.mark.django_db
def test_setting_up_a_trigger_needs_a_grant_of_ones_own(bob, pipeline):
    for setup in (
        lambda: services.webhook_secret_rotate(user=bob, pipeline=pipeline),
        lambda: services.polling_set(user=bob, pipeline=pipeline, enabled=True),
        lambda: services.schedule_create(user=bob, pipeline=pipeline, cron_expression="0 3 * * *"),
    ):
        with pytest.raises(PermissionDenied) as refused:
            setup()
        assert "bob has no active grant on cluster hpc" in refused.value.message
    assert not TriggerSettings.objects.filter(pipeline=pipeline, polling_enabled=True).exists()
    assert not pipeline.schedules.exists()


# ---------------------------------------------------------------- a trigger's runs (no cluster)


@pytest.mark.django_db
def test_a_delivery_is_refused_and_audited_when_its_setter_lost_the_grant(
    client, bob, pipeline, django_capture_on_commit_callbacks
):
    bob_grant = ClusterGrantFactory(user=bob, cluster=pipeline.cluster, cluster_username="bob01")
    _, secret = services.webhook_secret_rotate(user=bob, pipeline=pipeline)
    assert TriggerSettings.objects.get(pipeline=pipeline).webhook_set_by == bob
    delivery = _deliver(client, pipeline, secret, django_capture_on_commit_callbacks)
    _suspend(bob_grant)

    assert services.webhook_delivery_start(delivery_id=delivery.pk) is None
    delivery.refresh_from_db()
    assert delivery.outcome == D.FAILED
    assert "refused: bob, whose grant this trigger runs as, has no active grant on cluster hpc" in delivery.message
    event = AuditEvent.objects.get(action="pipeline.trigger_refused")
    assert event.after["trigger"] == "push" and event.after["runs_as"] == "bob"
    assert event.after["delivery_id"] == delivery.delivery_id
    # Refused before anything reached for the cluster (hpc cannot be reached: that would say so).
    assert "reach" not in delivery.message and not PipelineRun.objects.exists()


@pytest.mark.django_db
def test_a_schedule_is_refused_and_audited_when_its_setter_grant_expired(alice, bob, pipeline):
    bob_grant = ClusterGrantFactory(user=bob, cluster=pipeline.cluster, cluster_username="bob01")
    schedule = services.schedule_create(user=bob, pipeline=pipeline, cron_expression="*/5 * * * *")
    ClusterGrant.objects.filter(pk=bob_grant.pk).update(valid_until=timezone.now() - timedelta(minutes=1))

    services.schedules_due(now=schedule.next_fire_at + timedelta(seconds=1))
    schedule.refresh_from_db()
    assert schedule.last_outcome.startswith("refused: bob, whose grant this trigger runs as, has no active grant")
    assert schedule.pending == {} and not PipelineRun.objects.exists()
    event = AuditEvent.objects.get(action="pipeline.trigger_refused")
    assert event.after["trigger"] == "schedule" and event.after["schedule"] == str(schedule.uuid)
    # alice's own grant is active, but the schedule is bob's: it does not fall back to hers.
    assert pipeline.grant.user == alice


@pytest.mark.django_db
def test_polling_stops_being_run_as_a_member_who_left_the_team_audited_once(bob, pipeline):
    ClusterGrantFactory(user=bob, cluster=pipeline.cluster, cluster_username="bob01")
    services.polling_set(user=bob, pipeline=pipeline, enabled=True, interval_minutes=1)
    Membership.objects.filter(user=bob, team=pipeline.team).delete()

    now = timezone.now()
    assert services.polls_due(now=now) == 0  # no git ls-remote as bob
    assert services.polls_due(now=now + timedelta(minutes=2)) == 0
    row = TriggerSettings.objects.get(pipeline=pipeline)
    assert row.last_poll_error == "refused: bob, who set up this trigger, is no longer a member of team vision."
    assert row.poll_next_at > now + timedelta(minutes=2)
    assert AuditEvent.objects.filter(action="pipeline.trigger_refused", after__trigger="poll").count() == 1


@pytest.mark.django_db
def test_only_the_member_whose_grant_a_run_runs_as_may_retry_it(alice, bob, pipeline):
    ClusterGrantFactory(user=bob, cluster=pipeline.cluster, cluster_username="bob01")
    run = PipelineRun.objects.create(
        pipeline=pipeline, number=1, grant=pipeline.grant, status=PipelineRun.Status.FAILED, spec={"steps": {}}
    )
    with pytest.raises(PermissionDenied) as refused:
        pipeline_services.pipeline_run_retry(user=bob, run=run)
    assert "runs as alice's grant (alice01 on hpc); only they can retry it" in refused.value.message


@pytest.mark.django_db
def test_a_run_whose_grant_is_not_active_any_more_is_not_retried_even_with_another_grant(alice, pipeline):
    # The retried steps would run as the run's own grant: one suspended since refuses the
    # retry, though alice holds another active grant there (a new run would use that one).
    run = PipelineRun.objects.create(
        pipeline=pipeline, number=1, grant=pipeline.grant, status=PipelineRun.Status.FAILED, spec={"steps": {}}
    )
    _suspend(pipeline.grant)
    ClusterGrantFactory(user=alice, cluster=pipeline.cluster, cluster_username="alice02", status="active")
    with pytest.raises(PermissionDenied) as refused:
        pipeline_services.pipeline_run_retry(user=alice, run=run)
    assert "runs as your grant alice01 on hpc, which is not active any more" in refused.value.message
    assert "start a new run to run it as your current grant" in refused.value.message
    run.refresh_from_db()
    assert run.status == PipelineRun.Status.FAILED
    ClusterGrant.objects.filter(cluster_username="alice02").update(status=ClusterGrant.Status.SUSPENDED)
    with pytest.raises(PermissionDenied) as refused:
        pipeline_services.pipeline_run_retry(user=alice, run=run)
    assert "you have no active grant there" in refused.value.message


# ---------------------------------------------------------------- on the local cluster


@pytest.mark.slurm
@pytest.mark.django_db
def test_a_teammates_run_runs_as_the_teammates_own_grant(alice, bob, cluster_pipeline, cluster_repo):
    # Two grants for the same local account: what tells them apart is whose they are.
    bob_grant = make_local_grant(cluster_pipeline.cluster, bob, "scientist", max_cpus=1, max_time_minutes=30)
    run = pipeline_services.pipeline_run_start(pipeline=cluster_pipeline, actor=bob, trigger="user")
    assert run.grant == bob_grant and run.triggered_by == bob
    assert run.folder.startswith(bob_grant.job_root)
    pipeline_services.pipeline_run_advance(run_id=run.pk)
    job = Job.objects.get(pipeline_steps__run=run)
    assert job.owner == bob and job.grant == bob_grant and job.slurm_job_id, job.last_error
    started = AuditEvent.objects.filter(action="pipeline_run.started").latest("seq")
    assert started.after["runs_as"] == "bob"

    # bob's grant suspended mid-run: what is left is not submitted as anyone else's.
    pipeline_services.pipeline_run_cancel(user=bob, run=run)
    _suspend(bob_grant)
    with pytest.raises(PermissionDenied):
        pipeline_services.pipeline_run_start(pipeline=cluster_pipeline, actor=bob, trigger="user")
    assert PipelineRun.objects.filter(pipeline=cluster_pipeline).count() == 1
