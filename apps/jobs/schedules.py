"""Periodic work of the jobs app, registered by `manage.py setup_schedules`.

`jobs_track` runs for about a minute, ticking every few seconds (due submissions, stuck and
unknown jobs, one batched tracking poll), so status stays live although django-q2 fires
schedules at most once a minute."""

SCHEDULES = [
    ("jobs.track", "apps.jobs.tasks.jobs_track", 60),
]
