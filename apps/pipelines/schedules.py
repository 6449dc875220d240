"""Periodic work of the pipelines app, registered by `manage.py setup_schedules`."""

SCHEDULES = [
    ("pipelines.track", "apps.pipelines.tasks.pipelines_track", 60),
]
