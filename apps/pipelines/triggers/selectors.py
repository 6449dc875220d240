"""Reads for a pipeline's triggers. Only a member of the pipeline's team sees them; for anyone
else the pipeline does not exist."""

from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from apps.accounts.teams import team_owned
from apps.core.errors import NotFound
from apps.pipelines.models import Pipeline

from .models import PipelineSchedule, TriggerSettings, WebhookDelivery

RECENT_DELIVERIES = 10


def pipeline_for_triggers(*, user, pipeline_id) -> Pipeline:
    try:
        pipeline = (
            team_owned(Pipeline.objects.all(), user=user)
            .filter(uuid=pipeline_id)
            .select_related("team", "grant__cluster")
            .first()
        )
    except ValidationError:
        pipeline = None
    if pipeline is None:
        raise NotFound("No such pipeline.")
    return pipeline


def trigger_settings_get(*, pipeline: Pipeline) -> TriggerSettings:
    """The pipeline's settings, or unsaved defaults when nothing was set yet."""
    return TriggerSettings.objects.filter(pipeline=pipeline).select_related(
        "webhook_set_by", "polling_set_by"
    ).first() or TriggerSettings(pipeline=pipeline)


def schedule_list(*, pipeline: Pipeline) -> QuerySet[PipelineSchedule]:
    return pipeline.schedules.select_related("last_run", "created_by").order_by("created_at")


def schedule_get(*, pipeline: Pipeline, schedule_id) -> PipelineSchedule:
    try:
        schedule = pipeline.schedules.filter(uuid=schedule_id).first()
    except ValidationError:
        schedule = None
    if schedule is None:
        raise NotFound("No such schedule.")
    schedule.pipeline = pipeline
    return schedule


def delivery_list(*, pipeline: Pipeline, limit: int = RECENT_DELIVERIES) -> list[WebhookDelivery]:
    return list(pipeline.webhook_deliveries.select_related("run").order_by("-received_at")[:limit])
