from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.pagination import Pagination, page_response
from apps.core.schema import errors

from . import selectors, services


# Plain JSON from Cluster.state, described for the schema.
class ClusterPartitionSerializer(serializers.Serializer):
    name = serializers.CharField()
    state = serializers.CharField()
    is_default = serializers.BooleanField()
    time_limit_minutes = serializers.IntegerField(allow_null=True)
    nodes = serializers.ListField(child=serializers.CharField())
    total_cpus = serializers.IntegerField()
    total_memory_mb = serializers.IntegerField()
    total_gpus = serializers.IntegerField()


class ClusterNodeSerializer(serializers.Serializer):
    name = serializers.CharField()
    state = serializers.CharField()
    cpus = serializers.IntegerField()
    cpus_allocated = serializers.IntegerField(allow_null=True)
    memory_mb = serializers.IntegerField()
    free_memory_mb = serializers.IntegerField(allow_null=True)
    gpus = serializers.IntegerField()
    gres = serializers.CharField()
    partitions = serializers.ListField(child=serializers.CharField())
    reason = serializers.CharField()


class ClusterHealthSerializer(serializers.Serializer):
    reachable = serializers.BooleanField(allow_null=True)
    last_error = serializers.CharField()
    checked_at = serializers.DateTimeField(allow_null=True)


class ClusterMyGrantSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    status = serializers.CharField()
    cluster_username = serializers.CharField()


class ClusterRefSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    name = serializers.CharField()


class GrantLimitsSerializer(serializers.Serializer):
    allowed_partitions = serializers.ListField(child=serializers.CharField())
    allowed_accounts = serializers.ListField(child=serializers.CharField())
    allowed_qos = serializers.ListField(child=serializers.CharField())
    max_nodes = serializers.IntegerField(allow_null=True)
    max_cpus = serializers.IntegerField(allow_null=True)
    max_gpus = serializers.IntegerField(allow_null=True)
    max_mem_mb = serializers.IntegerField(allow_null=True)
    max_time_minutes = serializers.IntegerField(allow_null=True)
    max_active_jobs = serializers.IntegerField(allow_null=True)
    max_array_size = serializers.IntegerField(allow_null=True)
    valid_until = serializers.DateTimeField(allow_null=True)


class GrantOutputSerializer(serializers.Serializer):
    """A grant as its holder sees it: limits and whether credentials exist, never the secrets."""

    id = serializers.UUIDField(source="uuid")
    cluster = ClusterRefSerializer()
    status = serializers.CharField()
    cluster_username = serializers.CharField()
    limits = GrantLimitsSerializer(source="*")
    usable = serializers.BooleanField(source="is_usable")
    request_reason = serializers.CharField()
    decided_at = serializers.DateTimeField(allow_null=True)
    decision_comment = serializers.CharField()
    has_ssh_key = serializers.BooleanField()
    ssh_public_key = serializers.CharField()
    has_rest_token = serializers.BooleanField()
    rest_token_expires_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class ClusterOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    name = serializers.CharField()
    description = serializers.CharField()
    transport = serializers.CharField()
    is_active = serializers.BooleanField()
    health = ClusterHealthSerializer(source="*")
    my_grant = serializers.SerializerMethodField()

    @extend_schema_field(ClusterMyGrantSerializer(allow_null=True))
    def get_my_grant(self, cluster) -> dict | None:
        grant = self.context["mine"].get(cluster.pk)
        return ClusterMyGrantSerializer(grant).data if grant else None


class ClusterDetailOutputSerializer(ClusterOutputSerializer):
    login_host = serializers.CharField()
    login_port = serializers.IntegerField()
    host_key_fingerprint = serializers.CharField()
    rest_url = serializers.CharField()
    rest_api_version = serializers.CharField()
    mlflow_tracking_uri = serializers.CharField()
    job_root = serializers.CharField()
    grants_enforced_by_slurm = serializers.BooleanField()
    enforcement_note = serializers.CharField()
    state_read_at = serializers.SerializerMethodField()
    partitions = serializers.SerializerMethodField()
    nodes = serializers.SerializerMethodField()

    def get_state_read_at(self, cluster) -> str | None:
        return (cluster.state or {}).get("read_at")

    @extend_schema_field(ClusterPartitionSerializer(many=True))
    def get_partitions(self, cluster) -> list:
        return (cluster.state or {}).get("partitions", [])

    @extend_schema_field(ClusterNodeSerializer(many=True))
    def get_nodes(self, cluster) -> list:
        return (cluster.state or {}).get("nodes", [])


class ClusterListApi(APIView):
    """Clusters you may see (active ones, and any you hold a grant on), with their health and
    your grant there."""

    pagination_class = Pagination

    @extend_schema(operation_id="clusters_list", responses=ClusterOutputSerializer(many=True))
    def get(self, request):
        mine = selectors.grant_mine_by_cluster(user=request.user)
        clusters = selectors.cluster_list(user=request.user)
        return page_response(self, request, clusters, ClusterOutputSerializer, context={"mine": mine})


class ClusterDetailApi(APIView):
    """One cluster by name or id, with its partitions and nodes as last read."""

    @extend_schema(operation_id="clusters_retrieve", responses=ClusterDetailOutputSerializer)
    def get(self, request, ident: str):
        cluster = selectors.cluster_get(user=request.user, ident=ident)
        mine = selectors.grant_mine_by_cluster(user=request.user)
        return Response(ClusterDetailOutputSerializer(cluster, context={"mine": mine}).data)


SAY_WHY = "Say why you need access, so an administrator can decide."


class GrantListApi(APIView):
    """GET: your grants, with their limits. POST: request access to a cluster."""

    class GrantRequestInputSerializer(serializers.Serializer):
        cluster = serializers.CharField(help_text="The cluster's name or id.")
        reason = serializers.CharField(
            max_length=2000,
            help_text="Why you need access, for the administrator",
            error_messages={"blank": SAY_WHY, "required": SAY_WHY},
        )

    pagination_class = Pagination

    @extend_schema(operation_id="grants_list", responses=GrantOutputSerializer(many=True))
    def get(self, request):
        return page_response(self, request, selectors.grant_list(user=request.user), GrantOutputSerializer)

    @extend_schema(
        operation_id="grants_request",
        request=GrantRequestInputSerializer,
        responses={201: GrantOutputSerializer, **errors(404, 409)},
    )
    def post(self, request):
        data = self.GrantRequestInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        cluster = selectors.cluster_get(user=request.user, ident=data.validated_data["cluster"])
        grant = services.grant_request(user=request.user, cluster=cluster, reason=data.validated_data["reason"])
        return Response(GrantOutputSerializer(grant).data, status=201)
