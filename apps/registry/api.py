from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.team_api import TeamAssetApi, TeamAssetListCreateApi
from apps.accounts.teams import TeamField
from apps.core.pagination import Pagination, page_response
from apps.core.schema import errors

from . import artifacts, placements, selectors, services
from .models import ModelVersion

MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"


class ModelInputSerializer(serializers.Serializer):
    name = serializers.RegexField(MODEL_NAME, help_text="Unique across the hub, as in MLflow's registry")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    team = TeamField()


class ModelVersionOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    model = serializers.CharField(source="model.name")
    number = serializers.IntegerField(help_text="MLflow's version number")
    job = serializers.UUIDField(source="job.uuid")
    mlflow_run_id = serializers.CharField()
    source_uri = serializers.CharField(help_text="models:/m-… or runs:/<run>/<path>")
    artifact_uri = serializers.CharField()
    sha256 = serializers.CharField(help_text="sha256 of the model's artifact directory")
    metrics = serializers.DictField(child=serializers.FloatField(allow_null=True))
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()


class ModelVersionDetailOutputSerializer(ModelVersionOutputSerializer):
    live_in = serializers.ListField(
        child=serializers.CharField(), help_text="The environments where this version is live now"
    )
    # No allow_null: its schema would be oneOf({}, null), which null matches twice; {} takes null.
    input_example = serializers.JSONField(
        help_text="A request body for the model server made from the model's own MLflow input_example "
        "(or its signature); null when the model was logged with neither",
    )


class ModelOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    name = serializers.CharField()
    description = serializers.CharField()
    team = serializers.CharField(source="team.name")
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()
    version_count = serializers.IntegerField(default=None)
    latest_version = serializers.IntegerField(source="latest_number", default=None, allow_null=True)


class ModelDetailOutputSerializer(ModelOutputSerializer):
    versions = ModelVersionOutputSerializer(many=True, source="version_rows")


class ModelVersionInputSerializer(serializers.Serializer):
    job = serializers.UUIDField(help_text="The completed job whose MLflow run logged the model")


class ModelListCreateApi(TeamAssetListCreateApi):
    list_assets = staticmethod(selectors.registered_model_list)
    create_asset = staticmethod(services.registered_model_create)
    input_serializer, output_serializer = ModelInputSerializer, ModelOutputSerializer


class ModelDetailApi(TeamAssetApi, APIView):
    list_assets = staticmethod(selectors.registered_model_list)

    @extend_schema(responses=ModelDetailOutputSerializer)
    def get(self, request, name):
        model = self.with_counts(request, selectors.registered_model_get(user=request.user, name=name))
        model.version_rows = list(selectors.model_version_list(user=request.user, model=model))
        return Response(ModelDetailOutputSerializer(model).data)


class ModelVersionListCreateApi(APIView):
    pagination_class = Pagination

    @extend_schema(responses=ModelVersionOutputSerializer(many=True))
    def get(self, request, name):
        model = selectors.registered_model_get(user=request.user, name=name)
        versions = selectors.model_version_list(user=request.user, model=model)
        return page_response(self, request, versions, ModelVersionOutputSerializer)

    @extend_schema(
        request=ModelVersionInputSerializer,
        responses={201: ModelVersionOutputSerializer, 200: ModelVersionOutputSerializer, **errors(409, 503)},
        parameters=[OpenApiParameter("name", str, OpenApiParameter.PATH, pattern=MODEL_NAME)],
        description="Register the model a completed job's MLflow run logged as a new version of this model "
        "(created in the job's team if it does not exist). Registering the same job again answers 200 with "
        "the version it already made.",
    )
    def post(self, request, name):
        data = ModelVersionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = selectors.job_for_registration(user=request.user, id=data.validated_data["job"])
        existed = ModelVersion.objects.filter(model__name=name, job=job).exists()
        version = services.model_version_register(user=request.user, model_name=name, job=job)
        return Response(ModelVersionOutputSerializer(version).data, status=200 if existed else 201)


class ModelVersionDetailApi(APIView):
    @extend_schema(responses={200: ModelVersionDetailOutputSerializer, **errors(404, 503)})
    def get(self, request, name, number):
        model = selectors.registered_model_get(user=request.user, name=name)
        version = selectors.model_version_by_number(user=request.user, model=model, number=number)
        live = placements.live_placements(ModelVersion.objects.filter(pk=version.pk))
        version.live_in = [p.environment for p in live.get(version.pk, [])]
        version.input_example = artifacts.model_version_input_example(version=version)
        return Response(ModelVersionDetailOutputSerializer(version).data)
