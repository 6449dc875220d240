"""HubExperiment rows are found by whose they are (`team:<pk>`, `user:<pk>`), not by the
team's or user's name: a renamed team kept its name's row before, and a new team given the
old name took it over, with the renamed team's runs. Existing rows get their key from the
team or user their name names now; a row whose name no team or user has any more keeps no
key and is never used again (its experiment stays in MLflow)."""

from django.conf import settings
from django.db import migrations, models


def fill(apps, schema_editor):
    HubExperiment = apps.get_model("jobs", "HubExperiment")
    Team = apps.get_model("accounts", "Team")
    User = apps.get_model(settings.AUTH_USER_MODEL)
    for row in HubExperiment.objects.filter(key__isnull=True):
        key = None
        if row.name.startswith("team-"):
            pk = Team.objects.filter(name=row.name[len("team-") :]).values_list("pk", flat=True).first()
            key = f"team:{pk}" if pk else None
        elif row.name.startswith("user-"):
            pk = User.objects.filter(username=row.name[len("user-") :]).values_list("pk", flat=True).first()
            key = f"user:{pk}" if pk else None
        if key and not HubExperiment.objects.filter(key=key).exists():
            HubExperiment.objects.filter(pk=row.pk).update(key=key)


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0010_job_mlflow_login"),
        ("accounts", "0001_initial"),
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
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
