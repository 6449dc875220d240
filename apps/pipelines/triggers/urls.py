from django.urls import path

from . import views

urlpatterns = [
    path("hooks/pipelines/<uuid:pipeline_id>/", views.webhook, name="pipeline-webhook"),
    path("pipelines/<uuid:pipeline_id>/triggers/webhook/", views.webhook_secret, name="pipeline-webhook-secret"),
    path(
        "pipelines/<uuid:pipeline_id>/triggers/webhook/disable/",
        views.webhook_disable,
        name="pipeline-webhook-disable",
    ),
    path("pipelines/<uuid:pipeline_id>/triggers/polling/", views.polling, name="pipeline-polling"),
    path("pipelines/<uuid:pipeline_id>/triggers/live/", views.triggers_live, name="pipeline-triggers-live"),
    path("pipelines/<uuid:pipeline_id>/schedules/", views.schedule_add, name="pipeline-schedule-add"),
    path(
        "pipelines/<uuid:pipeline_id>/schedules/<uuid:schedule_id>/remove/",
        views.schedule_remove,
        name="pipeline-schedule-remove",
    ),
]
