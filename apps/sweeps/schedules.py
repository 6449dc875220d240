"""Periodic work of the sweeps app, registered by `manage.py setup_schedules`."""

SCHEDULES = [
    ("sweeps.track", "apps.sweeps.tasks.sweeps_track", 60),
]
