"""Read-only admin: model versions are immutable and made only through the services."""

from django.contrib import admin

from .models import ModelVersion, RegisteredModel


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(RegisteredModel)
class RegisteredModelAdmin(ReadOnlyAdmin):
    list_display = ("name", "team", "created_by", "created_at")
    list_filter = ("team",)
    search_fields = ("name", "description")
    list_select_related = ("team", "created_by")


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ("model", "number", "job", "sha256", "created_by", "created_at")
    search_fields = ("model__name", "mlflow_run_id", "sha256")
    list_select_related = ("model", "job", "created_by")
