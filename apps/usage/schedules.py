"""Periodic work of the usage app, registered by `manage.py setup_schedules`."""

SCHEDULES = [
    ("usage.collect", "apps.usage.tasks.usage_collect_all", 15 * 60),
]
