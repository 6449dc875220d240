from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from apps.audit.services import audit_record

from . import services
from .models import ApiToken, Membership, Team, User

AUDITED_USER_FLAGS = ("is_active", "is_staff", "is_superuser")


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


class AuditedMembershipsMixin:
    """Roles decide who may approve a deployment: every change made here is audited."""

    def save_formset(self, request, form, formset, change):
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)
        instances = formset.save(commit=False)
        for membership in formset.deleted_objects:
            audit_record(
                action="membership.removed", subject=membership, actor=request.user, before={"role": membership.role}
            )
            membership.delete()
        for membership in instances:
            services.membership_set(
                user=membership.user, team=membership.team, role=membership.role, actor=request.user
            )
        formset.save_m2m()


@admin.register(User)
class UserAdmin(AuditedMembershipsMixin, DjangoUserAdmin):
    inlines = [MembershipInline]

    def save_model(self, request, obj, form, change):
        before = None
        if change:
            old = User.objects.get(pk=obj.pk)
            before = {f: getattr(old, f) for f in AUDITED_USER_FLAGS}
        super().save_model(request, obj, form, change)
        after = {f: getattr(obj, f) for f in AUDITED_USER_FLAGS}
        if before != after:
            audit_record(
                action="user.updated" if change else "user.created",
                subject=obj,
                actor=request.user,
                before=before,
                after=after,
            )


@admin.register(Team)
class TeamAdmin(AuditedMembershipsMixin, admin.ModelAdmin):
    list_display = ["name", "description"]
    inlines = [MembershipInline]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["user", "name", "prefix", "key_hash", "created_at", "last_used_at", "revoked_at"]

    def has_add_permission(self, request):
        # A token made here would have to show its key in the admin; users make their own.
        return False
