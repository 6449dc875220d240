"""Periodic work of the registry, registered by `manage.py setup_schedules`."""

SCHEDULES = [
    ("registry.register_pending", "apps.registry.tasks.model_versions_register_pending", 300),
]
