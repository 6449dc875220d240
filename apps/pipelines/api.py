from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.teams import TeamField
from apps.clusters.selectors import cluster_get, grant_for_submission
from apps.core.errors import PermissionDenied, ValidationFailed
from apps.core.pagination import Pagination
from apps.core.schema import errors

from . import selectors, services


def _text(name: str) -> OpenApiParameter:
    """A text query parameter as the schema gives it: no NUL character (`_param` refuses one,
    which no database stores), so a NUL is not schema-valid input answered 400."""
    return OpenApiParameter(name, str, pattern=r"^[^\u0000]*$")


class PipelineInputSerializer(serializers.Serializer):
    team = TeamField()
    name = serializers.CharField(max_length=200)
    cluster = serializers.CharField(help_text="Cluster name or id; the pipeline runs as your grant there")
    repo_url = serializers.CharField(max_length=500, help_text="git URL or path the cluster account can read")
    branch = serializers.CharField(max_length=200, required=False, default="main")
    path = serializers.CharField(max_length=500, required=False, default="axle-pipeline.yaml")
    description = serializers.CharField(required=False, allow_blank=True, default="")


class PipelineOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    name = serializers.CharField()
    team = serializers.CharField(source="team.name")
    owner = serializers.CharField(source="owner.username")
    cluster = serializers.CharField(source="cluster.name")
    repo_url = serializers.CharField()
    branch = serializers.CharField()
    path = serializers.CharField()
    description = serializers.CharField()
    created_at = serializers.DateTimeField()


class RunInputSerializer(serializers.Serializer):
    commit = serializers.RegexField(
        r"^[0-9a-fA-F]{7,40}$|^[A-Za-z0-9._/-]{1,200}$",
        required=False,
        allow_null=True,
        default=None,
        help_text="A commit (or branch, tag); the pipeline's branch head when left out",
    )
    parameters = serializers.DictField(
        child=serializers.JSONField(), required=False, default=dict, help_text="Overrides of the file's parameters"
    )


class StepOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    path = serializers.CharField()
    sha256 = serializers.CharField()
    size = serializers.IntegerField(allow_null=True)
    reused = serializers.SerializerMethodField()

    def get_reused(self, obj) -> bool:
        return obj.reused_from_id is not None


class StepSerializer(serializers.Serializer):
    name = serializers.CharField()
    state = serializers.CharField()
    needs = serializers.ListField(child=serializers.CharField())
    job = serializers.UUIDField(source="job.uuid", allow_null=True, default=None)
    slurm_job_id = serializers.CharField(source="job.slurm_job_id", allow_null=True, default=None)
    job_status = serializers.CharField(source="job.status", allow_null=True, default=None)
    attempt = serializers.IntegerField()
    cached = serializers.SerializerMethodField()
    message = serializers.CharField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    outputs = StepOutputSerializer(many=True)

    def get_cached(self, obj) -> bool:
        return obj.cached_from_id is not None


class RunOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    pipeline = serializers.UUIDField(source="pipeline.uuid")
    pipeline_name = serializers.CharField(source="pipeline.name")
    number = serializers.IntegerField()
    status = serializers.CharField()
    commit = serializers.CharField()
    trigger = serializers.CharField()
    triggered_by = serializers.CharField(source="triggered_by.username", allow_null=True, default=None)
    delivery_id = serializers.CharField()
    runs_as = serializers.CharField(
        source="run_grant.user.username",
        help_text="Whose grant the steps run as (who started it, or set up its trigger)",
    )
    cluster_username = serializers.CharField(source="run_grant.cluster_username")
    parameters = serializers.DictField()
    failed_step = serializers.CharField()
    message = serializers.CharField()
    problems = serializers.ListField(child=serializers.DictField())
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    steps = StepSerializer(many=True, source="steps.all")


class PipelineListCreateApi(APIView):
    pagination_class = Pagination

    @extend_schema(
        parameters=[_text("name"), _text("team")],
        responses={200: PipelineOutputSerializer(many=True), **errors(400)},
    )
    def get(self, request):
        rows = selectors.pipeline_list(user=request.user, name=_param(request, "name"), team=_param(request, "team"))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(PipelineOutputSerializer(page, many=True).data)

    @extend_schema(request=PipelineInputSerializer, responses={201: PipelineOutputSerializer, **errors(404, 409)})
    def post(self, request):
        data = PipelineInputSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        d = data.validated_data
        cluster = cluster_get(user=request.user, ident=d["cluster"])
        grant = grant_for_submission(user=request.user, cluster=cluster)
        if grant is None:
            raise PermissionDenied(f"You have no active grant on cluster {cluster.name}.")
        pipeline = services.pipeline_create(
            user=request.user,
            team=d["team"],
            name=d["name"],
            grant=grant,
            repo_url=d["repo_url"],
            branch=d["branch"],
            path=d["path"],
            description=d["description"],
        )
        return Response(PipelineOutputSerializer(pipeline).data, status=201)


class PipelineDetailApi(APIView):
    @extend_schema(responses=PipelineOutputSerializer)
    def get(self, request, pipeline_id):
        return Response(
            PipelineOutputSerializer(selectors.pipeline_get(user=request.user, pipeline_id=pipeline_id)).data
        )


class PipelineRunStartApi(APIView):
    @extend_schema(request=RunInputSerializer, responses={201: RunOutputSerializer, **errors(409, 503)})
    def post(self, request, pipeline_id):
        data = RunInputSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        pipeline = selectors.pipeline_get(user=request.user, pipeline_id=pipeline_id)
        run = services.pipeline_run_start(
            pipeline=pipeline,
            actor=request.user,
            trigger="user",
            commit=data.validated_data["commit"],
            parameters=data.validated_data["parameters"],
        )
        return Response(RunOutputSerializer(run).data, status=201)


def _param(request, name: str) -> str:
    """A text query parameter; a NUL character (which no database stores) is refused."""
    value = request.query_params.get(name, "")
    if "\x00" in value:
        raise ValidationFailed(f"The {name} parameter holds a NUL character.")
    return value


class PipelineRunListApi(APIView):
    pagination_class = Pagination

    @extend_schema(
        parameters=[_text("pipeline"), _text("status")],
        responses={200: RunOutputSerializer(many=True), **errors(400, 404)},
    )
    def get(self, request):
        pipeline = None
        if ident := _param(request, "pipeline"):
            pipeline = selectors.pipeline_get(user=request.user, pipeline_id=ident)
        rows = selectors.pipeline_run_list(
            user=request.user, pipeline=pipeline, status=_param(request, "status")
        ).prefetch_related("steps__job", "steps__outputs")
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(RunOutputSerializer(page, many=True).data)


class PipelineRunDetailApi(APIView):
    @extend_schema(responses=RunOutputSerializer)
    def get(self, request, run_id):
        return Response(RunOutputSerializer(selectors.pipeline_run_get(user=request.user, run_id=run_id)).data)


class PipelineRunCancelApi(APIView):
    @extend_schema(request=None, responses={200: RunOutputSerializer, **errors(409, 503)})
    def post(self, request, run_id):
        run = selectors.pipeline_run_get(user=request.user, run_id=run_id)
        return Response(RunOutputSerializer(services.pipeline_run_cancel(user=request.user, run=run)).data)


class PipelineRunRetryApi(APIView):
    @extend_schema(request=None, responses={200: RunOutputSerializer, **errors(409, 503)})
    def post(self, request, run_id):
        run = selectors.pipeline_run_get(user=request.user, run_id=run_id)
        return Response(RunOutputSerializer(services.pipeline_run_retry(user=request.user, run=run)).data)
