"""Periodic work of the clusters app, registered by `manage.py setup_schedules`.

Each entry: (schedule name, function path, seconds between runs). Other apps may add a
`schedules.py` with the same SCHEDULES list; the command collects them all."""

SCHEDULES = [
    ("clusters.refresh_health", "apps.clusters.tasks.cluster_refresh_all", 60),
    # Grants expire by the clock, and Slurm's associations may be changed by hand: compare often.
    ("clusters.enforce_grants", "apps.clusters.enforcement.enforce_all", 300),
]
