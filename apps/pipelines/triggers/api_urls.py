from django.urls import path

from . import api

urlpatterns = [
    path("pipelines/<uuid:pipeline_id>/triggers/", api.PipelineTriggersApi.as_view(), name="api-pipeline-triggers"),
    path(
        "pipelines/<uuid:pipeline_id>/triggers/webhook/",
        api.PipelineWebhookSecretApi.as_view(),
        name="api-pipeline-webhook-secret",
    ),
    path(
        "pipelines/<uuid:pipeline_id>/triggers/webhook/disable/",
        api.PipelineWebhookDisableApi.as_view(),
        name="api-pipeline-webhook-disable",
    ),
    path(
        "pipelines/<uuid:pipeline_id>/triggers/polling/",
        api.PipelinePollingApi.as_view(),
        name="api-pipeline-polling",
    ),
    path(
        "pipelines/<uuid:pipeline_id>/schedules/",
        api.PipelineScheduleListCreateApi.as_view(),
        name="api-pipeline-schedule-list",
    ),
    path(
        "pipelines/<uuid:pipeline_id>/schedules/<uuid:schedule_id>/remove/",
        api.PipelineScheduleRemoveApi.as_view(),
        name="api-pipeline-schedule-remove",
    ),
]
