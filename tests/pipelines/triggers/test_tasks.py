"""The periodic task that fires schedules, polls and waiting deliveries."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from apps.core.leases import acquire_lease, release_lease
from apps.pipelines.models import PipelineRun
from apps.pipelines.triggers import services, tasks
from apps.pipelines.triggers.models import PipelineSchedule


@pytest.mark.django_db
def test_setup_schedules_registers_the_triggers_task_once():
    call_command("setup_schedules")
    call_command("setup_schedules")
    schedule = Schedule.objects.get(name="pipelines.triggers")
    assert schedule.func == "apps.pipelines.triggers.tasks.triggers_tick"
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 1 and schedule.repeats == -1


@pytest.mark.django_db(transaction=True)
def test_the_tick_fires_a_due_schedule_once_under_its_lease(alice, pipeline):
    schedule = services.schedule_create(user=alice, pipeline=pipeline, cron_expression="*/5 * * * *")
    PipelineSchedule.objects.filter(pk=schedule.pk).update(next_fire_at=timezone.now() - timedelta(seconds=5))

    assert acquire_lease("pipeline-triggers", timedelta(minutes=1))
    assert tasks.triggers_tick(seconds=0) == "another worker holds the lease"
    assert PipelineSchedule.objects.get(pk=schedule.pk).last_fired_at is None
    release_lease("pipeline-triggers")

    assert tasks.triggers_tick(seconds=0) == "done"
    schedule.refresh_from_db()
    assert schedule.last_fired_at is not None and schedule.next_fire_at > timezone.now()
    # The pipeline's cluster cannot be reached: the schedule says so, nothing runs, nothing raises.
    assert schedule.last_outcome.startswith("not started: Could not reach hpc")
    assert not PipelineRun.objects.exists()
    assert acquire_lease("pipeline-triggers", timedelta(seconds=1))  # it was given back
