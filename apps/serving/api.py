from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.pagination import Pagination
from apps.core.schema import errors
from apps.registry.selectors import model_version_by_number, registered_model_get

from . import policy, selectors, services
from .models import Deployment


class EnvironmentOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    required_approvals = serializers.IntegerField()
    approver_role = serializers.CharField()
    approver_team = serializers.CharField(source="approver_team.name", allow_null=True, default=None)
    backend = serializers.CharField()
    namespace = serializers.CharField()


class ApprovalOutputSerializer(serializers.Serializer):
    approver = serializers.CharField(source="approver.username")
    decision = serializers.CharField()
    comment = serializers.CharField()
    artifact_sha256 = serializers.CharField()
    created_at = serializers.DateTimeField()


class DeploymentOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    status = serializers.CharField()
    environment = serializers.CharField(source="environment.name")
    model = serializers.CharField(source="model_version.model.name")
    version = serializers.IntegerField(source="model_version.number")
    artifact_sha256 = serializers.CharField()
    requested_by = serializers.CharField(source="requested_by.username")
    reason = serializers.CharField()
    required_approvals = serializers.SerializerMethodField(help_text="Approvals it needs now, under the policy.")
    canary_percent = serializers.IntegerField(allow_null=True)
    resources = serializers.DictField()
    url = serializers.CharField()
    last_error = serializers.CharField()
    approvals = ApprovalOutputSerializer(many=True, source="approvals.all")
    created_at = serializers.DateTimeField()
    live_at = serializers.DateTimeField(allow_null=True)

    def get_required_approvals(self, deployment) -> int:
        return policy.required_approvals(deployment)


class ResourcesInputSerializer(serializers.Serializer):
    cpu = serializers.CharField(required=False, help_text='A Kubernetes quantity: "500m", "2"')
    memory = serializers.CharField(required=False, help_text='A Kubernetes quantity: "1Gi"')
    gpus = serializers.IntegerField(required=False, min_value=0, max_value=64)


class DeploymentRequestInputSerializer(serializers.Serializer):
    model = serializers.CharField()
    version = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
    environment = serializers.CharField()
    reason = serializers.CharField()
    resources = ResourcesInputSerializer(required=False, default=dict)
    canary_percent = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1, max_value=99, help_text="KServe environments only"
    )


class DecisionInputSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class EnvironmentListApi(APIView):
    @extend_schema(responses=EnvironmentOutputSerializer(many=True))
    def get(self, request):
        return Response(EnvironmentOutputSerializer(selectors.environment_list(user=request.user), many=True).data)


class DeploymentListFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Deployment.Status.values, required=False, allow_blank=True)
    environment = serializers.CharField(required=False, allow_blank=True, help_text="Environment name")


class DeploymentListCreateApi(APIView):
    pagination_class = Pagination

    @extend_schema(
        parameters=[DeploymentListFilterSerializer],
        responses={200: DeploymentOutputSerializer(many=True), **errors(400)},
    )
    def get(self, request):
        filters = DeploymentListFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        paginator = self.pagination_class()
        qs = selectors.deployment_list(user=request.user, **filters.validated_data)
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(DeploymentOutputSerializer(page, many=True).data)

    @extend_schema(
        request=DeploymentRequestInputSerializer, responses={201: DeploymentOutputSerializer, **errors(404, 409)}
    )
    def post(self, request):
        data = DeploymentRequestInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        model = registered_model_get(user=request.user, name=d["model"])
        version = model_version_by_number(user=request.user, model=model, number=d["version"])
        deployment = services.deployment_request(
            user=request.user,
            model_version=version,
            environment=selectors.environment_get(user=request.user, ident=d["environment"]),
            reason=d["reason"],
            resources=d["resources"],
            canary_percent=d["canary_percent"],
        )
        deployment.refresh_from_db()
        return Response(DeploymentOutputSerializer(deployment).data, status=201)


class DeploymentDetailApi(APIView):
    @extend_schema(responses=DeploymentOutputSerializer)
    def get(self, request, deployment_id):
        return Response(DeploymentOutputSerializer(selectors.deployment_get(user=request.user, id=deployment_id)).data)


class DeploymentApproveApi(APIView):
    decide = staticmethod(services.deployment_approve)

    @extend_schema(request=DecisionInputSerializer, responses={200: DeploymentOutputSerializer, **errors(409, 503)})
    def post(self, request, deployment_id):
        data = DecisionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        deployment = self.decide(
            user=request.user,
            deployment=selectors.deployment_get(user=request.user, id=deployment_id),
            comment=data.validated_data["comment"],
        )
        deployment.refresh_from_db()
        return Response(DeploymentOutputSerializer(deployment).data)


class DeploymentRejectApi(DeploymentApproveApi):
    decide = staticmethod(services.deployment_reject)


class DeploymentWithdrawApi(APIView):
    @extend_schema(
        request=None,
        responses={200: DeploymentOutputSerializer, **errors(403, 409)},
        description="The requester takes back a request nobody has decided yet.",
    )
    def post(self, request, deployment_id):
        deployment = services.deployment_withdraw(
            user=request.user, deployment=selectors.deployment_get(user=request.user, id=deployment_id)
        )
        deployment.refresh_from_db()
        return Response(DeploymentOutputSerializer(deployment).data)


class DeploymentRollbackApi(APIView):
    @extend_schema(request=None, responses={200: DeploymentOutputSerializer, **errors(409, 503)})
    def post(self, request, deployment_id):
        back_to = services.deployment_rollback(
            user=request.user, deployment=selectors.deployment_get(user=request.user, id=deployment_id)
        )
        back_to.refresh_from_db()
        return Response(DeploymentOutputSerializer(back_to).data)


class DeploymentPredictApi(APIView):
    @extend_schema(request=dict, responses={200: dict, **errors(400, 409, 503)})
    def post(self, request, deployment_id):
        deployment = selectors.deployment_get(user=request.user, id=deployment_id)
        return Response(services.deployment_predict(user=request.user, deployment=deployment, payload=request.data))
