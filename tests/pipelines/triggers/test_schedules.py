"""Cron schedules in a time zone, fired by the triggers' periodic task on a clock the test
controls; the run they start goes to the real Slurm cluster."""

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.core.errors import ValidationFailed
from apps.jobs import services as job_services
from apps.pipelines import services as pipeline_services
from apps.pipelines.models import PipelineRun, StepRun
from apps.pipelines.triggers import cron, services, tasks
from apps.pipelines.triggers.models import PipelineSchedule

R = PipelineRun.Status


def test_next_fire_is_computed_on_the_schedules_own_clocks():
    winter = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    assert cron.next_fire("30 2 * * *", "Europe/Berlin", winter) == datetime(2026, 1, 11, 1, 30, tzinfo=UTC)
    assert cron.next_fire("30 2 * * *", "America/New_York", winter) == datetime(2026, 1, 11, 7, 30, tzinfo=UTC)
    summer = datetime(2026, 7, 10, 12, 0, tzinfo=UTC)
    assert cron.next_fire("30 2 * * *", "Europe/Berlin", summer) == datetime(2026, 7, 11, 0, 30, tzinfo=UTC)


def test_a_repeated_hour_fires_a_fixed_time_once_and_a_wildcard_hour_every_hour():
    before = datetime(2026, 10, 24, 23, 0, tzinfo=UTC)  # Berlin's clocks go back at 03:00 on the 25th
    daily = cron.next_fires("30 2 * * *", "Europe/Berlin", before, 2)
    assert daily == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 26, 1, 30, tzinfo=UTC)]
    hourly = cron.next_fires("30 * * * *", "Europe/Berlin", before, 4)
    assert [t.hour for t in hourly] == [23, 0, 1, 2]


@pytest.mark.parametrize(
    ("expression", "tz", "field"),
    [("* * *", "UTC", "cron"), ("61 * * * *", "UTC", "cron"), ("0 3 * * *", "Mars/Olympus", "timezone")],
)
@pytest.mark.django_db
def test_a_bad_expression_or_zone_is_refused_naming_the_field(alice, pipeline, expression, tz, field):
    with pytest.raises(ValidationFailed) as caught:
        services.schedule_create(user=alice, pipeline=pipeline, cron_expression=expression, tz_name=tz)
    assert caught.value.message.startswith(f"{field}: ")
    assert not PipelineSchedule.objects.exists()


@pytest.mark.django_db
def test_a_schedule_shows_its_next_fire_time_in_its_zone(api, alice, pipeline):
    from apps.accounts.services import token_create

    api.credentials(HTTP_AUTHORIZATION=f"Token {token_create(user=alice, name='t')[1]}")
    made = api.post(f"/api/v1/pipelines/{pipeline.uuid}/schedules/", {"cron": "0 3 * * 1-5", "timezone": "Asia/Tokyo"})
    assert made.status_code == 201, made.content
    data = made.json()
    local = datetime.fromisoformat(data["next_fire_local"])
    assert (local.hour, local.minute, local.utcoffset()) == (3, 0, timedelta(hours=9))
    assert datetime.fromisoformat(data["next_fire_at"].replace("Z", "+00:00")) == local
    assert local.weekday() < 5
    event = AuditEvent.objects.get(action="pipeline.schedule_added")
    assert event.actor == alice and event.request_id == made["X-Request-ID"]
    listed = api.get(f"/api/v1/pipelines/{pipeline.uuid}/schedules/").json()
    assert [s["id"] for s in listed] == [data["id"]]
    gone = api.post(f"/api/v1/pipelines/{pipeline.uuid}/schedules/{data['id']}/remove/")
    assert gone.status_code == 204 and not PipelineSchedule.objects.exists()
    assert AuditEvent.objects.filter(action="pipeline.schedule_removed", actor=alice).exists()


def _drive(run: PipelineRun, timeout: float = 180) -> PipelineRun:
    """What the workers do: the jobs' batched poll, then a pass over the run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job_services.jobs_poll()
        pipeline_services.pipeline_run_advance(run_id=run.pk)
        run.refresh_from_db()
        if run.is_terminal and not run.steps.filter(state=StepRun.State.SUBMITTED).exists():
            return run
        time.sleep(1)
    raise AssertionError(f"run stayed {run.status}: {list(run.steps.values_list('name', 'state'))}")


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.django_db
def test_a_cron_schedule_fires_and_its_run_reaches_slurm(alice, cluster_pipeline, cluster_repo):
    schedule = services.schedule_create(
        user=alice, pipeline=cluster_pipeline, cron_expression="*/5 * * * *", tz_name="Europe/Berlin"
    )
    due = schedule.next_fire_at
    assert due > timezone.now() and due.minute % 5 == 0 and due.second == 0

    tasks.triggers_once(now=due - timedelta(seconds=1))
    assert not PipelineRun.objects.exists()  # not yet

    tasks.triggers_once(now=due + timedelta(seconds=2))
    run = PipelineRun.objects.get(pipeline=cluster_pipeline)
    assert (run.trigger, run.commit) == (PipelineRun.Trigger.SCHEDULE, cluster_repo.first_commit)
    assert run.trigger_detail["schedule"] == str(schedule.uuid)
    schedule.refresh_from_db()
    assert schedule.next_fire_at == due + timedelta(minutes=5)
    assert schedule.last_run == run and schedule.last_outcome.startswith("started run #1")

    # The same moment again (a second worker, a task run twice) fires nothing more.
    tasks.triggers_once(now=due + timedelta(seconds=3))
    assert PipelineRun.objects.count() == 1

    run = _drive(run)
    assert run.status == R.SUCCEEDED, run.message
    step = run.steps.select_related("job").get()
    assert step.job.slurm_job_id and step.job.status == "completed"
    assert step.job.cluster_username == "scientist"


@pytest.mark.slurm
@pytest.mark.django_db
def test_a_schedule_never_starts_a_second_run_of_an_active_commit_unless_allowed(alice, cluster_pipeline, cluster_repo):
    guarded = services.schedule_create(user=alice, pipeline=cluster_pipeline, cron_expression="*/10 * * * *")
    t1 = guarded.next_fire_at + timedelta(seconds=1)
    services.schedules_due(now=t1)
    first = PipelineRun.objects.get()
    assert first.status == R.RUNNING  # its steps are never advanced here: it stays active

    t2 = t1 + timedelta(minutes=10)
    services.schedules_due(now=t2)
    guarded.refresh_from_db()
    assert PipelineRun.objects.count() == 1
    assert guarded.last_outcome == f"skipped: run #1 of {cluster_repo.first_commit[:12]} is still running."

    # A new commit is not the active run's: it runs.
    new = cluster_repo.commit({"more.txt": "x\n"}, "more")
    t3 = t2 + timedelta(minutes=10)
    services.schedules_due(now=t3)
    assert list(PipelineRun.objects.order_by("number").values_list("commit", flat=True)) == [
        cluster_repo.first_commit,
        new,
    ]

    # The user allowed overlap on another schedule: it starts a run of the commit that is active.
    overlapping = services.schedule_create(
        user=alice, pipeline=cluster_pipeline, cron_expression="*/10 * * * *", allow_concurrent=True
    )
    PipelineSchedule.objects.filter(pk=guarded.pk).update(enabled=False)
    services.schedules_due(now=max(t3, overlapping.next_fire_at) + timedelta(minutes=10))
    assert PipelineRun.objects.filter(commit=new).count() == 2
    assert PipelineRun.objects.filter(commit=new, status=R.RUNNING).count() == 2

    # Once the runs of the commit ended, the guarded schedule runs it again.
    for run in PipelineRun.objects.filter(status=R.RUNNING):
        pipeline_services.pipeline_run_cancel(user=alice, run=run)
    PipelineSchedule.objects.filter(pk=guarded.pk).update(enabled=True, next_fire_at=t3 + timedelta(hours=1))
    PipelineSchedule.objects.filter(pk=overlapping.pk).update(enabled=False)
    services.schedules_due(now=t3 + timedelta(hours=1, seconds=1))
    assert PipelineRun.objects.filter(commit=new).count() == 3


@pytest.mark.slurm
@pytest.mark.django_db
def test_the_guard_holds_under_the_pipelines_lock_too(alice, cluster_pipeline, cluster_repo):
    # A run of the head commit that started after the schedule's own look (a push, a user's
    # click): pipeline_run_start refuses under the lock, and the schedule says why.
    services.schedule_create(user=alice, pipeline=cluster_pipeline, cron_expression="0 * * * *")
    other = pipeline_services.pipeline_run_start(
        pipeline=cluster_pipeline, actor=alice, trigger="user", commit=cluster_repo.first_commit
    )
    with pytest.raises(Exception) as caught:
        pipeline_services.pipeline_run_start(
            pipeline=cluster_pipeline,
            actor=None,
            run_as=alice,
            trigger="schedule",
            commit=cluster_repo.first_commit,
            unless_active=True,
        )
    assert "still running" in str(caught.value) and f"#{other.number}" in str(caught.value)
    assert PipelineRun.objects.count() == 1


@pytest.mark.django_db
def test_seeding_a_schedule_twice_keeps_one(alice, pipeline):
    first = services.schedule_ensure(user=alice, pipeline=pipeline, cron_expression="0  3 * * *", tz_name="UTC")
    again = services.schedule_ensure(user=alice, pipeline=pipeline, cron_expression="0 3 * * *", tz_name="UTC")
    assert first == again and pipeline.schedules.count() == 1 and first.cron == "0 3 * * *"
