"""django-q2's admin pages, with every change going through apps.hub.services (audited)."""

from django.contrib import admin, messages
from django_q import admin as q_admin
from django_q.models import Failure, OrmQ, Schedule, Success

from . import services


@admin.action(description="Resubmit selected tasks to the queue")
def resubmit_selected(modeladmin, request, queryset):
    tasks = list(queryset)
    for task in tasks:
        services.task_resubmit(task=task, actor=request.user)
    modeladmin.message_user(request, f"Resubmitted {len(tasks)} task(s).", messages.SUCCESS)


# OrmQ has a page only with the ORM broker (django-q registers it then); Redis has its own tools.
QUEUE_IN_ADMIN = admin.site.is_registered(OrmQ)
for model in (Schedule, Success, Failure, OrmQ):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


@admin.register(Schedule)
class ScheduleAdmin(q_admin.ScheduleAdmin):
    def save_model(self, request, obj, form, change):
        fields = {f: form.cleaned_data[f] for f in services.SCHEDULE_FIELDS if f in form.cleaned_data}
        services.schedule_save(schedule=obj, actor=request.user, **fields)

    def delete_model(self, request, obj):
        services.schedule_delete(schedule=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for schedule in queryset:
            services.schedule_delete(schedule=schedule, actor=request.user)


class AuditedTaskDeleteMixin:
    actions = [resubmit_selected]

    def has_change_permission(self, request, obj=None):
        return False  # a task's record is what happened; there is nothing to edit

    def delete_model(self, request, obj):
        services.task_result_delete(task=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for task in queryset:
            services.task_result_delete(task=task, actor=request.user)


@admin.register(Success)
class SuccessAdmin(AuditedTaskDeleteMixin, q_admin.TaskAdmin):
    pass


@admin.register(Failure)
class FailureAdmin(AuditedTaskDeleteMixin, q_admin.FailAdmin):
    pass


class QueuedTaskAdmin(q_admin.QueueAdmin):
    def has_change_permission(self, request, obj=None):
        return False  # editing a queued payload's key or lock would only confuse the workers

    def delete_model(self, request, obj):
        services.queued_task_delete(queued=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for queued in queryset:
            services.queued_task_delete(queued=queued, actor=request.user)


if QUEUE_IN_ADMIN:
    admin.site.register(OrmQ, QueuedTaskAdmin)
