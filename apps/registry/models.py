from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from apps.accounts.models import Team
from apps.core.models import BaseModel
from apps.jobs.models import Job


class RegisteredModel(BaseModel):
    """A team's named model, mirrored in MLflow's model registry under the same name.

    Names are unique across the hub, as they are in MLflow's registry, which has no teams."""

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="registered_models")
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ModelVersion(BaseModel):
    """One version of a registered model: the model a job's MLflow run logged, pinned by the
    sha256 of its artifact directory. Its number is MLflow's version number.

    Nothing about a version changes after it is created; a new model is a new version."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    job = models.ForeignKey(Job, on_delete=models.PROTECT, related_name="model_versions")
    trial = models.ForeignKey(
        "sweeps.Trial",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="model_versions",
        help_text="The sweep trial (a task of the job's array) whose run logged the model.",
    )
    mlflow_run_id = models.CharField(max_length=64)
    source_uri = models.CharField(max_length=1000, help_text="models:/m-… or runs:/<run>/<path>, as MLflow logged it.")
    artifact_uri = models.CharField(max_length=2000, help_text="Where the model's files are stored.")
    sha256 = models.CharField(max_length=64, help_text="sha256 of the model's artifact directory.")
    metrics = models.JSONField(default=dict, blank=True, help_text="The job's final metrics when registered.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["model", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["model", "number"], name="modelversion_unique_number"),
            # One version per job and model: what makes registering the same job twice return the
            # version it already made, even when two requests race.
            models.UniqueConstraint(
                fields=["model", "job"], condition=models.Q(trial__isnull=True), name="modelversion_unique_job"
            ),
            # A job array runs many trials: one version per trial and model there.
            models.UniqueConstraint(
                fields=["model", "trial"], condition=models.Q(trial__isnull=False), name="modelversion_unique_trial"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.number}"

    def clean(self) -> None:
        if self.pk is not None:
            raise ValidationError(f"{self} is immutable; register a new version instead.")

    def save(self, *args, **kwargs):
        # A guard, not a side effect: an edit through any path (admin, shell, a careless
        # service) would silently break the version's link to what it pins.
        if not self._state.adding:
            raise ValidationError(f"{self} is immutable; register a new version instead.")
        super().save(*args, **kwargs)
