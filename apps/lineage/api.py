from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.errors import ValidationFailed
from apps.core.schema import errors

from . import selectors


class NodeSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="<kind>:<uuid> (code, image and script nodes: <kind>:<what pins them>)")
    kind = serializers.CharField()
    label = serializers.CharField()
    url = serializers.CharField(help_text="The node's page in the dashboard, when it has one")
    attrs = serializers.DictField()


class EdgeSerializer(serializers.Serializer):
    source = serializers.CharField(help_text="The upstream node: what was used")
    target = serializers.CharField(help_text="The downstream node: what came of it")
    relation = serializers.CharField(
        help_text="input_of, code_of, image_of, script_of, produced, reproduced_as, rerun_as, …"
    )


class LineageSerializer(serializers.Serializer):
    focus = serializers.CharField()
    nodes = NodeSerializer(many=True)
    edges = EdgeSerializer(many=True)
    truncated = serializers.BooleanField(help_text="True when the graph was cut at 200 nodes")


class LineageApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("kind", str, required=True, enum=["dataset_version", "job", "model_version"]),
            OpenApiParameter("id", OpenApiTypes.UUID, required=True, description="The node's id"),
        ],
        responses={200: LineageSerializer, **errors(400, 404)},
    )
    def get(self, request):
        kind, id = request.query_params.get("kind", ""), request.query_params.get("id", "")
        if not kind or not id:
            raise ValidationFailed("Give kind and id, e.g. ?kind=model_version&id=<uuid>.")
        graph = selectors.lineage(user=request.user, kind=kind, id=id)
        return Response(graph.as_dict())
