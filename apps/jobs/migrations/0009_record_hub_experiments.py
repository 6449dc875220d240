"""Record the experiments the hub made before it kept a record of them (apps.jobs.experiments).

The ids come from the hub's own jobs and sweeps: the experiment each team's (or user's) runs
already go to, the latest one where a name had several. Nothing is asked of MLflow: the hub
adopts only what it already used, and a name it never used (no job of that team has a run)
gets an experiment of the hub's own when it is first needed."""

from django.db import migrations


def _name(team_name, username):
    return f"team-{team_name}" if team_name else f"user-{username}"


def record(apps, schema_editor):
    HubExperiment = apps.get_model("jobs", "HubExperiment")
    found = {}
    for model in (apps.get_model("sweeps", "Sweep"), apps.get_model("jobs", "Job")):
        rows = (
            model.objects.exclude(mlflow_experiment_id="")
            .order_by("created_at", "pk")
            .values_list("team__name", "owner__username", "mlflow_experiment_id")
        )
        for team_name, username, experiment_id in rows.iterator():
            found[_name(team_name, username)] = experiment_id
    HubExperiment.objects.bulk_create(
        [HubExperiment(name=name, mlflow_name=name, experiment_id=eid) for name, eid in found.items()],
        ignore_conflicts=True,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0008_hubexperiment"),
        ("sweeps", "0001_initial"),
    ]

    operations = [migrations.RunPython(record, migrations.RunPython.noop)]
