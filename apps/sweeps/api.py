from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.teams import TeamField
from apps.clusters.selectors import cluster_get, grant_for_submission_to
from apps.core.pagination import Pagination
from apps.core.schema import errors

from . import selectors, services
from .models import Sweep


class SweepInputSerializer(serializers.Serializer):
    cluster = serializers.CharField(help_text="Cluster name or id")
    spec = serializers.CharField(trim_whitespace=False, help_text="A Katib Experiment (kubeflow.org/v1beta1), YAML")
    script = serializers.CharField(
        required=False,
        allow_null=True,
        default=None,
        trim_whitespace=False,
        help_text="The trial's sbatch script; without it, spec.trialTemplate.trialSpec must be the script",
    )


class SweepCreateInputSerializer(SweepInputSerializer):
    team = TeamField(required=False, allow_null=True, default=None)


class SpecProblemSerializer(serializers.Serializer):
    path = serializers.CharField()
    message = serializers.CharField()


class SweepValidationSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    problems = SpecProblemSerializer(many=True)
    trials = serializers.IntegerField(required=False)
    first_array = serializers.IntegerField(required=False)
    algorithm = serializers.CharField(required=False)


class TrialOutputSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    state = serializers.CharField()
    params = serializers.DictField()
    objective = serializers.FloatField(allow_null=True)
    intermediate = serializers.DictField()
    metrics = serializers.DictField(help_text="Each of additionalMetricNames, by its metricStrategies")
    stop_reason = serializers.DictField()
    slurm_task = serializers.CharField()
    mlflow_run_id = serializers.CharField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class SweepOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    name = serializers.CharField()
    status = serializers.CharField()
    cluster = serializers.CharField(source="cluster.name")
    team = serializers.CharField(source="team.name", allow_null=True, default=None)
    algorithm = serializers.CharField()
    max_trial_count = serializers.IntegerField()
    best_value = serializers.FloatField(allow_null=True)
    message = serializers.CharField()
    mlflow_run_id = serializers.CharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class SweepCreateOutputSerializer(SweepOutputSerializer):
    launch = serializers.ChoiceField(
        choices=["submitted", "queued", "failed", "unknown"],
        help_text="The first wave: submitted to Slurm by this request (its trials are in squeue), queued "
        "(a worker submits it: the cluster could not be reached at once), failed (see launch_message) or "
        "unknown (the cluster did not answer the sbatch in time; the hub finds the wave by its marker)",
    )
    launch_message = serializers.CharField(
        help_text="Why the first wave failed (Slurm's refusal, as it said it) or is unknown; empty otherwise",
    )


class SweepExtendInputSerializer(serializers.Serializer):
    trials = serializers.IntegerField(min_value=1, max_value=100_000)


class SweepValidateApi(APIView):
    @extend_schema(request=SweepInputSerializer, responses={200: SweepValidationSerializer, **errors(404)})
    def post(self, request):
        data = SweepInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        cluster = cluster_get(user=request.user, ident=d["cluster"])
        return Response(
            services.sweep_validate(user=request.user, cluster=cluster, spec_text=d["spec"], script=d["script"])
        )


class SweepListFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=["active", *Sweep.Status.values], required=False, allow_blank=True, help_text="active: not ended yet"
    )


class SweepListCreateApi(APIView):
    pagination_class = Pagination

    @extend_schema(
        parameters=[SweepListFilterSerializer], responses={200: SweepOutputSerializer(many=True), **errors(400)}
    )
    def get(self, request):
        # As the job list: an unknown status is refused (400), not matched against nothing.
        filters = SweepListFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        sweeps = selectors.sweep_list(user=request.user, status=filters.validated_data.get("status", ""))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(sweeps, request, view=self)
        return paginator.get_paginated_response(SweepOutputSerializer(page, many=True).data)

    @extend_schema(request=SweepCreateInputSerializer, responses={201: SweepCreateOutputSerializer, **errors(404)})
    def post(self, request):
        data = SweepCreateInputSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        d = data.validated_data
        # The grant and its cluster in one query; without a grant, the cluster alone (a
        # missing cluster is a 404, a missing grant the service's refusal).
        grant = grant_for_submission_to(user=request.user, ident=d["cluster"])
        sweep = services.sweep_create(
            user=request.user,
            cluster=grant.cluster if grant else cluster_get(user=request.user, ident=d["cluster"]),
            grant=grant,
            spec_text=d["spec"],
            script=d["script"],
            team=d["team"],
            submit_now=True,
        )
        return Response(SweepCreateOutputSerializer(sweep).data, status=201)


class SweepDetailApi(APIView):
    @extend_schema(responses=SweepOutputSerializer)
    def get(self, request, sweep_id):
        return Response(SweepOutputSerializer(selectors.sweep_get(user=request.user, sweep_id=sweep_id)).data)


class SweepTrialsApi(APIView):
    @extend_schema(responses=TrialOutputSerializer(many=True))
    def get(self, request, sweep_id):
        sweep = selectors.sweep_get(user=request.user, sweep_id=sweep_id)
        return Response(TrialOutputSerializer(selectors.trial_list(sweep=sweep), many=True).data)


class SweepStopApi(APIView):
    @extend_schema(request=None, responses={200: SweepOutputSerializer, **errors(409, 503)})
    def post(self, request, sweep_id):
        sweep = services.sweep_stop(user=request.user, sweep=selectors.sweep_get(user=request.user, sweep_id=sweep_id))
        return Response(SweepOutputSerializer(sweep).data)


class SweepExtendApi(APIView):
    @extend_schema(request=SweepExtendInputSerializer, responses=SweepOutputSerializer)
    def post(self, request, sweep_id):
        data = SweepExtendInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        sweep = selectors.sweep_get(user=request.user, sweep_id=sweep_id)
        sweep = services.sweep_extend(user=request.user, sweep=sweep, trials=data.validated_data["trials"])
        return Response(SweepOutputSerializer(sweep).data)
