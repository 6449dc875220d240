"""The pipelines' triggers in the Django admin: what each pipeline listens to, whose grant its
runs run as, and every delivery a forge sent. An administrator can switch a trigger off (a
leaked webhook secret, a schedule that floods the cluster) or pause and resume a schedule; every
such change goes through a service that writes its audit event. Secrets are never shown, and
nothing here starts a run: triggers are set up by team members, whose grant their runs use."""

from django import forms
from django.contrib import admin, messages

from apps.core.admin import ReadOnlyAdmin

from . import services
from .models import PipelineSchedule, TriggerSettings, WebhookDelivery


@admin.register(TriggerSettings)
class TriggerSettingsAdmin(admin.ModelAdmin):
    list_display = [
        "pipeline",
        "team",
        "webhook",
        "webhook_set_by",
        "polling_enabled",
        "poll_interval_minutes",
        "polling_set_by",
        "last_polled_at",
        "last_poll_error",
    ]
    list_filter = ["polling_enabled"]
    search_fields = ["pipeline__name", "pipeline__team__name", "pipeline__repo_url"]
    list_select_related = ["pipeline__team", "webhook_set_by", "polling_set_by"]
    # The encrypted secret is left out on purpose: it is never rendered, even encrypted.
    fields = [
        "pipeline",
        "webhook",
        "webhook_secret_set_at",
        "webhook_set_by",
        "polling_enabled",
        "poll_interval_minutes",
        "polling_set_by",
        "poll_next_at",
        "last_polled_at",
        "last_seen_commit",
        "last_poll_error",
        "poll_pending",
        "updated_at",
    ]
    actions = ["turn_off_webhook", "turn_off_polling"]

    def has_change_permission(self, request, obj=None):
        # Looked at here, changed only by the actions below (each through its service).
        return False

    @admin.display(description="team", ordering="pipeline__team__name")
    def team(self, obj):
        return obj.pipeline.team

    @admin.display(boolean=True, description="webhook")
    def webhook(self, obj):
        return obj.has_webhook

    def has_add_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Turn the webhook off (its URL answers 404)")
    def turn_off_webhook(self, request, queryset):
        done = sum(
            services.webhook_turn_off_by_admin(admin=request.user, pipeline=row.pipeline)
            for row in queryset.select_related("pipeline")
        )
        self.message_user(request, f"Turned off {done} webhook(s).", messages.SUCCESS)

    @admin.action(description="Turn polling off")
    def turn_off_polling(self, request, queryset):
        done = sum(
            services.polling_turn_off_by_admin(admin=request.user, pipeline=row.pipeline)
            for row in queryset.select_related("pipeline")
        )
        self.message_user(request, f"Turned off polling of {done} pipeline(s).", messages.SUCCESS)


class ScheduleForm(forms.ModelForm):
    class Meta:
        model = PipelineSchedule
        fields = ["enabled"]


@admin.register(PipelineSchedule)
class PipelineScheduleAdmin(admin.ModelAdmin):
    form = ScheduleForm
    list_display = [
        "pipeline",
        "cron",
        "timezone",
        "enabled",
        "next_fire_at",
        "created_by",
        "last_fired_at",
        "last_outcome",
    ]
    list_filter = ["enabled", "timezone"]
    search_fields = ["pipeline__name", "pipeline__team__name", "cron"]
    list_select_related = ["pipeline", "created_by"]
    readonly_fields = [
        "pipeline",
        "cron",
        "timezone",
        "allow_concurrent",
        "created_by",
        "next_fire_at",
        "last_fired_at",
        "last_outcome",
        "last_run",
        "pending",
    ]
    actions = ["pause_selected", "resume_selected"]

    def has_add_permission(self, request, obj=None):
        # A schedule's runs run as the grant of the member who added it: members add them.
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        # Through the service, which recomputes the next fire time and writes the audit event.
        services.schedule_set_enabled(actor=request.user, schedule=obj, enabled=form.cleaned_data["enabled"])

    @admin.action(description="Pause the selected schedules")
    def pause_selected(self, request, queryset):
        for schedule in queryset:
            services.schedule_set_enabled(actor=request.user, schedule=schedule, enabled=False)
        self.message_user(request, "Paused.", messages.SUCCESS)

    @admin.action(description="Resume the selected schedules (from their next time)")
    def resume_selected(self, request, queryset):
        for schedule in queryset:
            services.schedule_set_enabled(actor=request.user, schedule=schedule, enabled=True)
        self.message_user(request, "Resumed.", messages.SUCCESS)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    """What forges sent (signature checked) and what became of it: a record, never edited."""

    list_display = ["received_at", "pipeline", "forge", "delivery_id", "ref", "commit", "outcome", "attempts", "run"]
    list_filter = ["forge", "outcome"]
    search_fields = ["pipeline__name", "delivery_id", "commit", "ref"]
    list_select_related = ["pipeline", "run"]
