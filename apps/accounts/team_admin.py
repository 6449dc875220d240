"""The admin of a team-owned asset (see `apps.accounts.teams`): read-only, listed with its
team and creator, filtered by team, searched by name and description."""

from apps.core.admin import ReadOnlyAdmin


class TeamAssetAdmin(ReadOnlyAdmin):
    list_display = ("name", "team", "created_by", "created_at")
    list_filter = ("team",)
    search_fields = ("name", "description")
    list_select_related = ("team", "created_by")
