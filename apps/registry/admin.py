"""Read-only admin: model versions are immutable and made only through the services."""

from django.contrib import admin

from apps.accounts.team_admin import TeamAssetAdmin
from apps.core.admin import ReadOnlyAdmin

from .models import ModelVersion, RegisteredModel

admin.site.register(RegisteredModel, TeamAssetAdmin)


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ("model", "number", "job", "sha256", "created_by", "created_at")
    search_fields = ("model__name", "mlflow_run_id", "sha256")
    list_select_related = ("model", "job", "created_by")
