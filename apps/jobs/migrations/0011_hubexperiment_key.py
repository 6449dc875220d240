"""HubExperiment rows are found by whose they are (`team:<pk>`, `user:<pk>`), not by the
team's or user's name: a renamed team kept its name's row before, and a new team given the
old name took it over, with the renamed team's runs. Existing rows get their key from the
team or user whose jobs and sweeps log there (one only: a row several owners used gets no
key); a row no job used, from the team or user its name names now. A row without a key is
never used again (its experiment stays in MLflow)."""

from django.conf import settings
from django.db import migrations, models


def fill(apps, schema_editor):
    HubExperiment = apps.get_model("jobs", "HubExperiment")
    Team = apps.get_model("accounts", "Team")
    User = apps.get_model(settings.AUTH_USER_MODEL)
    # Whose runs each experiment holds: from the hub's own jobs and sweeps (as 0009 did), not
    # from the name, which a renamed team left to a new team of that name.
    users: dict[str, set[str]] = {}
    for model in (apps.get_model("sweeps", "Sweep"), apps.get_model("jobs", "Job")):
        rows = model.objects.exclude(mlflow_experiment_id="").values_list("mlflow_experiment_id", "team_id", "owner_id")
        for experiment_id, team_id, owner_id in rows.order_by().distinct().iterator():
            users.setdefault(experiment_id, set()).add(f"team:{team_id}" if team_id else f"user:{owner_id}")
    for row in HubExperiment.objects.filter(key__isnull=True).order_by("pk"):
        owners = users.get(row.experiment_id, set())
        key = None
        if len(owners) == 1:
            key = next(iter(owners))
        elif not owners and row.name.startswith("team-"):  # no run there: nobody's runs to give away
            pk = Team.objects.filter(name=row.name[len("team-") :]).values_list("pk", flat=True).first()
            key = f"team:{pk}" if pk else None
        elif not owners and row.name.startswith("user-"):
            pk = User.objects.filter(username=row.name[len("user-") :]).values_list("pk", flat=True).first()
            key = f"user:{pk}" if pk else None
        # Several owners (a new team of a renamed team's name already logged there): no key,
        # so neither takes it; each gets an experiment of its own when next needed.
        if key and not HubExperiment.objects.filter(key=key).exists():
            HubExperiment.objects.filter(pk=row.pk).update(key=key)


def unfill(apps, schema_editor):
    """Back to one row per name (0010's unique `name`): of the rows that share a name (a new
    team given a renamed team's old name, say), the one found by its owner keeps it (a keyed
    row, the newest first), and each other one is renamed `<name>~<id>`; its experiment stays
    in MLflow and its id in the row."""
    HubExperiment = apps.get_model("jobs", "HubExperiment")
    kept: set[str] = set()
    for row in sorted(HubExperiment.objects.all(), key=lambda row: (row.key is None, -row.pk)):
        if row.name in kept:
            HubExperiment.objects.filter(pk=row.pk).update(name=f"{row.name[:180]}~{row.pk}")
        else:
            kept.add(row.name)


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0010_job_mlflow_login"),
        ("accounts", "0001_initial"),
        ("sweeps", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="hubexperiment",
            name="key",
            field=models.CharField(
                help_text="Whose experiment: team:<pk> or user:<pk> (empty for a record whose team or user is gone).",
                max_length=64,
                null=True,
                unique=True,
            ),
        ),
        migrations.AlterField(
            model_name="hubexperiment",
            name="name",
            field=models.CharField(help_text="The team's or user's experiment name when it was made.", max_length=200),
        ),
        migrations.RunPython(fill, unfill),
    ]
