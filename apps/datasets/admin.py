"""Read-only admin for datasets: versions are immutable and change only through the services,
so administrators look here and never edit."""

from django.contrib import admin

from apps.accounts.team_admin import TeamAssetAdmin
from apps.core.admin import ReadOnlyAdmin

from .models import Dataset, DatasetVersion

admin.site.register(Dataset, TeamAssetAdmin)


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ReadOnlyAdmin):
    list_display = ("dataset", "number", "status", "cluster", "path", "uri", "file_count", "size_bytes", "created_at")
    list_filter = ("status", "cluster")
    search_fields = ("dataset__name", "path", "uri", "checksum")
    list_select_related = ("dataset", "cluster")
