"""Admin for users, teams, groups and tokens. Every save goes through the services, so an
administrator's change is audited like any other. Users, teams and groups that other rows
point at are deactivated rather than deleted."""

from axes.admin import AccessAttemptAdmin as AxesAccessAttemptAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from django.utils import timezone

from . import services
from .forms import AdminPasswordChangeForm
from .models import ApiToken, Membership, Team, User


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    # Search boxes, not dropdowns of every user and team.
    autocomplete_fields = ["user", "team"]


class AuditedMembershipsMixin:
    """Roles decide who may approve a deployment: every change made here is audited."""

    def save_formset(self, request, form, formset, change):
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)
        instances = formset.save(commit=False)
        for membership in formset.deleted_objects:
            services.membership_remove(membership=membership, actor=request.user)
        for membership in instances:
            services.membership_set(
                user=membership.user, team=membership.team, role=membership.role, actor=request.user
            )


@admin.register(User)
class UserAdmin(AuditedMembershipsMixin, DjangoUserAdmin):
    inlines = [MembershipInline]
    change_password_form = AdminPasswordChangeForm

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            user = services.user_update(
                user=obj,
                actor=request.user,
                groups=data.get("groups"),
                permissions=data.get("user_permissions"),
                # Only what the form changed: its dates show whole seconds, the rows keep more.
                **{f: data[f] for f in services.USER_FIELDS if f in form.changed_data},
            )
        else:
            usable = data.get("set_usable_password", True)
            user = services.user_create(
                username=data["username"], password=data.get("password1") if usable else None, actor=request.user
            )
        obj.pk = user.pk
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        # Groups and permissions were saved by user_update; only the memberships are left.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def has_delete_permission(self, request, obj=None):
        # Jobs, grants and the audit trail point at users: deactivate one instead.
        return False


@admin.register(Team)
class TeamAdmin(AuditedMembershipsMixin, admin.ModelAdmin):
    list_display = ["name", "description"]
    search_fields = ["name", "description"]
    inlines = [MembershipInline]

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            team = services.team_update(
                team=obj, actor=request.user, name=data["name"], description=data.get("description", "")
            )
        else:
            team = services.team_create(name=data["name"], description=data.get("description", ""), actor=request.user)
        obj.pk = team.pk
        obj.refresh_from_db()

    def has_delete_permission(self, request, obj=None):
        # Datasets, models and jobs belong to teams: a team is for good.
        return False


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(DjangoGroupAdmin):
    def save_model(self, request, obj, form, change):
        services.group_save(
            group=obj, actor=request.user, name=form.cleaned_data["name"], permissions=form.cleaned_data["permissions"]
        )

    def save_related(self, request, form, formsets, change):
        # group_save set the permissions.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def delete_model(self, request, obj):
        services.group_delete(group=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for group in queryset:
            services.group_delete(group=group, actor=request.user)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["user", "name", "prefix", "key_hash", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke_selected"]

    def has_add_permission(self, request):
        # A token made here would have to show its key in the admin; users make their own.
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # Revoke instead: the audit trail names the token.
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke_selected(self, request, queryset):
        for token in queryset.select_related("user"):
            services.token_revoke(user=token.user, token_uuid=token.uuid, actor=request.user)
        self.message_user(request, f"Revoked {queryset.count()} token(s).", messages.SUCCESS)


# django-axes' own admin deletes failure counts (which lifts a lockout) without a trace: the
# same pages, with every deletion going through a service that audits it. Its access logs are
# off (AXES_DISABLE_ACCESS_LOG) and stay read-only here.
for _model in (AccessAttempt, AccessLog, AccessFailureLog):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)


@admin.register(AccessAttempt)
class AccessAttemptAdmin(AxesAccessAttemptAdmin):
    actions = ["delete_selected", "cleanup_expired_attempts"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def delete_model(self, request, obj) -> None:
        services.lockouts_clear(attempts=[obj], actor=request.user)

    def delete_queryset(self, request, queryset) -> None:
        services.lockouts_clear(attempts=queryset, actor=request.user)

    @admin.action(description="Delete expired attempts")
    def cleanup_expired_attempts(self, request, queryset):
        # As axes' own action: every attempt older than the cool-off, whatever was selected.
        expired = AccessAttempt.objects.filter(attempt_time__lte=timezone.now() - settings.AXES_COOLOFF_TIME)
        count = services.lockouts_clear(attempts=expired, actor=request.user)
        self.message_user(request, f"Deleted {count} expired attempts.", messages.SUCCESS)


class _ReadOnlyLogAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


admin.site.register(AccessLog, _ReadOnlyLogAdmin)
admin.site.register(AccessFailureLog, _ReadOnlyLogAdmin)
