"""Periodic work of the datasets app, registered by `manage.py setup_schedules`."""

SCHEDULES = [
    ("datasets.rescue", "apps.datasets.tasks.dataset_versions_rescue", 300),
]
