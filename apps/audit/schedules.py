"""Periodic work of the audit app, registered by `manage.py setup_schedules`."""

SCHEDULES = [
    ("audit.checkpoint", "apps.audit.tasks.audit_checkpoint", 300),
]
