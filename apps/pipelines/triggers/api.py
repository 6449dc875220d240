"""API for a pipeline's triggers, under /api/v1/pipelines/<id>/triggers/ and …/schedules/."""

from zoneinfo import ZoneInfo

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from . import selectors, services
from .forges import FORGE_NAMES
from .views import webhook_url


class ScheduleInputSerializer(serializers.Serializer):
    cron = serializers.CharField(
        max_length=100, help_text="Five cron fields: minute hour day-of-month month day-of-week, e.g. `0 3 * * 1-5`"
    )
    timezone = serializers.CharField(max_length=64, default="UTC", help_text="IANA time zone name, e.g. Europe/Berlin")
    allow_concurrent = serializers.BooleanField(
        default=False, help_text="Start a run even while a run of the same commit is still active"
    )


class ScheduleOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    cron = serializers.CharField()
    timezone = serializers.CharField()
    allow_concurrent = serializers.BooleanField()
    enabled = serializers.BooleanField()
    next_fire_at = serializers.DateTimeField(allow_null=True, help_text="UTC")
    next_fire_local = serializers.SerializerMethodField(help_text="The next fire time on the schedule's own clocks")
    last_fired_at = serializers.DateTimeField(allow_null=True)
    last_outcome = serializers.CharField()
    last_run = serializers.UUIDField(source="last_run.uuid", allow_null=True, default=None)
    runs_as = serializers.CharField(
        source="created_by.username", help_text="Its runs run as this member's grant (who added it), checked each time"
    )

    def get_next_fire_local(self, schedule) -> str | None:
        if schedule.next_fire_at is None:
            return None
        return schedule.next_fire_at.astimezone(ZoneInfo(schedule.timezone)).isoformat()


class PollingInputSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()
    interval_minutes = serializers.IntegerField(
        min_value=services.MIN_POLL_MINUTES, max_value=services.MAX_POLL_MINUTES, required=False
    )


class PollingOutputSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(source="polling_enabled")
    interval_minutes = serializers.IntegerField(source="poll_interval_minutes")
    last_polled_at = serializers.DateTimeField(allow_null=True)
    last_seen_commit = serializers.CharField()
    last_error = serializers.CharField(source="last_poll_error")
    runs_as = serializers.CharField(
        source="polling_set_by.username",
        allow_null=True,
        default=None,
        help_text="Polls, and the runs they start, run as this member's grant (who turned polling on)",
    )


class DeliveryOutputSerializer(serializers.Serializer):
    forge = serializers.CharField()
    delivery_id = serializers.CharField()
    event = serializers.CharField()
    ref = serializers.CharField()
    commit = serializers.CharField()
    outcome = serializers.CharField()
    message = serializers.CharField()
    run = serializers.UUIDField(source="run.uuid", allow_null=True, default=None)
    received_at = serializers.DateTimeField()


class WebhookOutputSerializer(serializers.Serializer):
    configured = serializers.BooleanField()
    url = serializers.CharField(help_text="Give the forge this URL; it answers POSTs only")
    forges = serializers.ListField(child=serializers.CharField())
    secret_set_at = serializers.DateTimeField(allow_null=True)
    runs_as = serializers.CharField(
        allow_null=True, help_text="Pushes run as this member's grant (who made the secret), checked each time"
    )
    deliveries = DeliveryOutputSerializer(many=True, help_text="The latest deliveries whose signature checked out")


class WebhookSecretOutputSerializer(serializers.Serializer):
    url = serializers.CharField()
    secret = serializers.CharField(help_text="Shown this once: the hub never shows it again")
    secret_set_at = serializers.DateTimeField()


class TriggersOutputSerializer(serializers.Serializer):
    webhook = WebhookOutputSerializer()
    polling = PollingOutputSerializer()
    schedules = ScheduleOutputSerializer(many=True)


def _triggers(request, pipeline) -> dict:
    row = selectors.trigger_settings_get(pipeline=pipeline)
    return {
        "webhook": {
            "configured": row.has_webhook,
            "url": webhook_url(request, pipeline),
            "forges": list(FORGE_NAMES),
            "secret_set_at": row.webhook_secret_set_at,
            "runs_as": row.webhook_set_by.get_username() if row.has_webhook and row.webhook_set_by else None,
            "deliveries": selectors.delivery_list(pipeline=pipeline),
        },
        "polling": row,
        "schedules": selectors.schedule_list(pipeline=pipeline),
    }


class PipelineTriggersApi(APIView):
    @extend_schema(responses=TriggersOutputSerializer)
    def get(self, request, pipeline_id):
        pipeline = selectors.pipeline_for_triggers(user=request.user, pipeline_id=pipeline_id)
        return Response(TriggersOutputSerializer(_triggers(request, pipeline)).data)


class PipelineWebhookSecretApi(APIView):
    @extend_schema(request=None, responses={201: WebhookSecretOutputSerializer})
    def post(self, request, pipeline_id):
        """Make the webhook secret, or replace it (the old one stops working at once). The
        answer is the only time the secret is shown."""
        pipeline = selectors.pipeline_for_triggers(user=request.user, pipeline_id=pipeline_id)
        row, secret = services.webhook_secret_rotate(user=request.user, pipeline=pipeline)
        data = {"url": webhook_url(request, pipeline), "secret": secret, "secret_set_at": row.webhook_secret_set_at}
        response = Response(WebhookSecretOutputSerializer(data).data, status=201)
        response["Cache-Control"] = "no-store"
        return response


class PipelineWebhookDisableApi(APIView):
    @extend_schema(request=None, responses=TriggersOutputSerializer)
    def post(self, request, pipeline_id):
        pipeline = selectors.pipeline_for_triggers(user=request.user, pipeline_id=pipeline_id)
        services.webhook_disable(user=request.user, pipeline=pipeline)
        return Response(TriggersOutputSerializer(_triggers(request, pipeline)).data)


class PipelinePollingApi(APIView):
    @extend_schema(request=PollingInputSerializer, responses=PollingOutputSerializer)
    def post(self, request, pipeline_id):
        data = PollingInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        pipeline = selectors.pipeline_for_triggers(user=request.user, pipeline_id=pipeline_id)
        row = services.polling_set(
            user=request.user,
            pipeline=pipeline,
            enabled=data.validated_data["enabled"],
            interval_minutes=data.validated_data.get("interval_minutes"),
        )
        return Response(PollingOutputSerializer(row).data)


class PipelineScheduleListCreateApi(APIView):
    @extend_schema(responses=ScheduleOutputSerializer(many=True))
    def get(self, request, pipeline_id):
        pipeline = selectors.pipeline_for_triggers(user=request.user, pipeline_id=pipeline_id)
        return Response(ScheduleOutputSerializer(selectors.schedule_list(pipeline=pipeline), many=True).data)

    @extend_schema(request=ScheduleInputSerializer, responses={201: ScheduleOutputSerializer})
    def post(self, request, pipeline_id):
        data = ScheduleInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        pipeline = selectors.pipeline_for_triggers(user=request.user, pipeline_id=pipeline_id)
        schedule = services.schedule_create(
            user=request.user,
            pipeline=pipeline,
            cron_expression=d["cron"],
            tz_name=d["timezone"],
            allow_concurrent=d["allow_concurrent"],
        )
        return Response(ScheduleOutputSerializer(schedule).data, status=201)


class PipelineScheduleRemoveApi(APIView):
    @extend_schema(request=None, responses={204: None})
    def post(self, request, pipeline_id, schedule_id):
        pipeline = selectors.pipeline_for_triggers(user=request.user, pipeline_id=pipeline_id)
        schedule = selectors.schedule_get(pipeline=pipeline, schedule_id=schedule_id)
        services.schedule_delete(user=request.user, schedule=schedule)
        return Response(status=204)
