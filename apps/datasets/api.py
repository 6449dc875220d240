from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.team_api import TeamAssetApi, TeamAssetListCreateApi
from apps.accounts.teams import TeamField
from apps.clusters.selectors import cluster_get
from apps.core.pagination import Pagination, page_response
from apps.core.schema import NOT_STRIPPED, STRIPPED, STRIPPED_TO_NOTHING, errors

from . import selectors, services
from .services import URI_SCHEMES


class DatasetInputSerializer(serializers.Serializer):
    team = TeamField()
    name = serializers.RegexField(
        r"^[-a-zA-Z0-9_]+$", max_length=64, help_text="Letters, digits, hyphens, underscores; unique in the team"
    )
    description = serializers.CharField(required=False, allow_blank=True, default="")


class DatasetOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    team = serializers.CharField(source="team.name")
    name = serializers.CharField()
    description = serializers.CharField()
    env_name = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()
    version_count = serializers.IntegerField(default=None)
    latest_version = serializers.IntegerField(source="latest_number", default=None, allow_null=True)

    def get_env_name(self, obj) -> str:
        return selectors.env_name(obj)


class DatasetVersionInputSerializer(serializers.Serializer):
    cluster = serializers.CharField(required=False, allow_blank=True, default="", help_text="Cluster name or id")
    path = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="Absolute path (folder or file) on the cluster's shared filesystem",
    )
    uri = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="Instead of a path: s3://…, https://…; not checksummed by the hub",
    )


class DatasetVersionInputScheme(OpenApiSerializerExtension):
    """The body is one of two shapes (a path on a cluster, or a URI), which a serializer's fields
    cannot say; the service enforces the same rules."""

    target_class = DatasetVersionInputSerializer

    def map_serializer(self, auto_schema, direction):
        text, empty = {"type": "string"}, {"type": "string", "pattern": STRIPPED_TO_NOTHING}
        uri = "^" + STRIPPED + "*(" + "|".join(sorted(URI_SCHEMES)) + ")://" + NOT_STRIPPED + "+" + STRIPPED + "*$"
        path = {
            "type": "string",
            "maxLength": 4000,
            "pattern": "^" + STRIPPED + r"*/[^\u0000\n]*" + STRIPPED + "*$",
            "not": {"pattern": r"(^|/)\.\.(/|" + STRIPPED + "*$)"},
        }
        return {
            "type": "object",
            "properties": {"cluster": text, "path": text, "uri": text},
            "oneOf": [
                {
                    "title": "A path on a cluster (checksummed there)",
                    "required": ["cluster", "path"],
                    "properties": {
                        "cluster": {"type": "string", "pattern": r"^[^\u0000]*" + NOT_STRIPPED + r"[^\u0000]*$"},
                        "path": path,
                        "uri": empty,
                    },
                },
                {
                    "title": "A URI (not checksummed)",
                    "required": ["uri"],
                    "properties": {
                        "uri": {"type": "string", "maxLength": 4000, "pattern": uri},
                        "cluster": empty,
                        "path": empty,
                    },
                },
            ],
        }


class DatasetVersionProgressSerializer(serializers.Serializer):
    files_done = serializers.IntegerField()
    files_total = serializers.IntegerField(allow_null=True)
    bytes_done = serializers.IntegerField()
    bytes_total = serializers.IntegerField(allow_null=True)
    percent = serializers.IntegerField(source="progress_percent")


class DatasetVersionOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    dataset = serializers.UUIDField(source="dataset.uuid")
    dataset_name = serializers.CharField(source="dataset.name")
    number = serializers.IntegerField()
    status = serializers.CharField()
    cluster = serializers.CharField(source="cluster.name", allow_null=True, default=None)
    path = serializers.CharField()
    uri = serializers.CharField()
    size_bytes = serializers.IntegerField(allow_null=True)
    file_count = serializers.IntegerField(allow_null=True)
    checksum = serializers.CharField(help_text="sha256 of the manifest of `sha256  relative/path` lines")
    progress = DatasetVersionProgressSerializer(source="*")
    error = serializers.CharField()
    cluster_username = serializers.CharField(help_text="The cluster account the checksum ran as")
    created_by = serializers.CharField(source="created_by.username")
    created_at = serializers.DateTimeField()
    checksum_started_at = serializers.DateTimeField(allow_null=True)
    checksum_finished_at = serializers.DateTimeField(allow_null=True)


class DatasetVersionDetailOutputSerializer(DatasetVersionOutputSerializer):
    manifest = serializers.CharField(help_text="The manifest, cut after 10,000 lines on large datasets")
    manifest_complete = serializers.BooleanField()


class DatasetListCreateApi(TeamAssetListCreateApi):
    list_assets = staticmethod(selectors.dataset_list)
    create_asset = staticmethod(services.dataset_create)
    input_serializer, output_serializer = DatasetInputSerializer, DatasetOutputSerializer


class DatasetDetailApi(TeamAssetApi, APIView):
    list_assets = staticmethod(selectors.dataset_list)
    output_serializer = DatasetOutputSerializer

    @extend_schema(responses=DatasetOutputSerializer)
    def get(self, request, dataset_id):
        return self.asset_response(request, selectors.dataset_get(user=request.user, id=dataset_id))


class DatasetVersionListCreateApi(APIView):
    pagination_class = Pagination

    @extend_schema(responses=DatasetVersionOutputSerializer(many=True))
    def get(self, request, dataset_id):
        dataset = selectors.dataset_get(user=request.user, id=dataset_id)
        versions = selectors.dataset_version_list(user=request.user, dataset=dataset)
        return page_response(self, request, versions, DatasetVersionOutputSerializer)

    @extend_schema(
        request=DatasetVersionInputSerializer, responses={201: DatasetVersionOutputSerializer, **errors(503)}
    )
    def post(self, request, dataset_id):
        dataset = selectors.dataset_get(user=request.user, id=dataset_id)
        data = DatasetVersionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        ident = data.validated_data["cluster"]
        version = services.dataset_version_register(
            user=request.user,
            dataset=dataset,
            cluster=cluster_get(user=request.user, ident=ident) if ident else None,
            path=data.validated_data["path"] or None,
            uri=data.validated_data["uri"] or None,
        )
        version = selectors.dataset_version_get(user=request.user, id=version.uuid)
        return Response(DatasetVersionOutputSerializer(version).data, status=201)


class DatasetVersionDetailApi(APIView):
    @extend_schema(responses=DatasetVersionDetailOutputSerializer)
    def get(self, request, dataset_id, number):
        dataset = selectors.dataset_get(user=request.user, id=dataset_id)
        version = selectors.dataset_version_by_number(user=request.user, dataset=dataset, number=number)
        return Response(DatasetVersionDetailOutputSerializer(version).data)
