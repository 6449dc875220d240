"""Periodic work of the jobs app, registered by `manage.py setup_schedules`.

`jobs_track` runs for a few minutes (AXLE_TRACK_LOOP_SECONDS), ticking every few seconds (due
submissions, stuck and unknown jobs, one batched tracking poll), so status stays live although
django-q2 fires schedules at most once a minute; the minutely schedule starts a loop should none
hold the lease (a start while one runs returns at once)."""

SCHEDULES = [
    ("jobs.track", "apps.jobs.tasks.jobs_track", 60),
]
