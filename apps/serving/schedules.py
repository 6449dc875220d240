"""Reconcile what should be served with what runs (restarted workers, dead servers)."""

SCHEDULES = [
    ("serving.reconcile", "apps.serving.tasks.serving_reconcile", 60),
]
