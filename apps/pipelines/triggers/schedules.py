"""Periodic work of the pipeline triggers, registered by `manage.py setup_schedules`.

`triggers_tick` runs for about a minute, firing due cron schedules and polls every few
seconds, so a schedule fires within seconds of its minute although django-q2 starts
periodic tasks at most once a minute."""

SCHEDULES = [
    ("pipelines.triggers", "apps.pipelines.triggers.tasks.triggers_tick", 60),
]
