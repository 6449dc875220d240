import uuid

from django.db import migrations, models


def fill(apps, schema_editor):
    StepOutput = apps.get_model("pipelines", "StepOutput")
    for pk in StepOutput.objects.values_list("pk", flat=True):
        StepOutput.objects.filter(pk=pk).update(uuid=uuid.uuid4())


class Migration(migrations.Migration):
    """A public id for step outputs, so lineage can draw them as nodes. Added in three steps so
    rows that exist get one each."""

    dependencies = [("pipelines", "0001_initial")]

    operations = [
        migrations.AddField(model_name="stepoutput", name="uuid", field=models.UUIDField(null=True, editable=False)),
        migrations.RunPython(fill, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="stepoutput",
            name="uuid",
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
    ]
