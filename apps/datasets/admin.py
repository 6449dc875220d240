"""Read-only admin for datasets: versions are immutable and change only through the services,
so administrators look here and never edit."""

from django.contrib import admin

from .models import Dataset, DatasetVersion


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Dataset)
class DatasetAdmin(ReadOnlyAdmin):
    list_display = ("name", "team", "created_by", "created_at")
    list_filter = ("team",)
    search_fields = ("name", "description")
    list_select_related = ("team", "created_by")


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ReadOnlyAdmin):
    list_display = ("dataset", "number", "status", "cluster", "path", "uri", "file_count", "size_bytes", "created_at")
    list_filter = ("status", "cluster")
    search_fields = ("dataset__name", "path", "uri", "checksum")
    list_select_related = ("dataset", "cluster")
