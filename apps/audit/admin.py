from django.contrib import admin
from django.template.loader import render_to_string

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["seq", "created_at", "actor_username", "action", "subject_type", "subject_text"]
    list_filter = ["action"]
    search_fields = ["action", "subject_text", "actor_username", "request_id"]

    def get_readonly_fields(self, request, obj=None):
        return ["change", *(f.name for f in self.model._meta.fields)]

    @admin.display(description="change (before → after)")
    def change(self, obj):
        return render_to_string("audit/_change.html", {"rows": obj.change_rows()}) or "—"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
