from django.core.validators import RegexValidator
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.clusters.selectors import cluster_get
from apps.core.errors import ValidationFailed
from apps.core.pagination import KeysetPagination
from apps.core.schema import errors
from apps.integrations.slurm import environment
from apps.integrations.slurm.policy import has_control_characters

from . import selectors, services, validation
from .models import Job
from .services.create import MAX_BATCH


class CodeInputSerializer(serializers.Serializer):
    repo = serializers.CharField(help_text="git URL or path, as the cluster account reads it")
    ref = serializers.CharField(required=False, allow_blank=True, default="", help_text="branch, tag or commit")


class JobInputSerializer(serializers.Serializer):
    cluster = serializers.CharField(help_text="Cluster name or id")
    name = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=200,
        trim_whitespace=False,
        validators=[RegexValidator(r"^[^\x00-\x1f\x7f]*$", "A job name cannot hold control characters.")],
    )
    script = serializers.CharField(trim_whitespace=False)
    parameters = serializers.DictField(
        required=False, default=dict, help_text="Exported to the job as environment variables"
    )

    def validate_name(self, value: str) -> str:
        # The name reaches Slurm as the job name, shown in its one-line listings.
        if has_control_characters(value):
            raise serializers.ValidationError(validation.NAME_CONTROL)
        return value


PARAMETER_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


def _any_case(text: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in text)


# Names validation refuses (a 400 with the problem on create): said in the schema too, so a
# schema-valid body is never refused for its parameter names. Case-insensitive, as validation
# (apps.integrations.slurm.environment is the one rule; this only restates it for clients).
RESERVED_NAMES = (
    "^(?:"
    + "|".join(
        [
            *(f"{_any_case(n)}$" for n in sorted(environment.RUNTIME_NAMES)),
            *(_any_case(p) for p in (*environment.RUNTIME_PREFIXES, *environment.HUB_PREFIXES)),
        ]
    )
    + ")"
)


@extend_schema_field(
    {
        "type": "object",
        "propertyNames": {"pattern": PARAMETER_NAME, "not": {"pattern": RESERVED_NAMES}},
        "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
    }
)
class ParametersField(serializers.DictField):
    """NAME: value pairs that become the job's environment: names an environment variable can
    have, plain values. What else a name may not be (reserved prefixes) is reported by validation."""

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        for name, value in data.items():
            if not RegexValidator(PARAMETER_NAME).regex.match(name):
                raise serializers.ValidationError(
                    f"Parameter name {name!r} cannot be an environment variable: use letters, digits and _."
                )
            if isinstance(value, (dict, list)):
                raise serializers.ValidationError(f"Parameter {name} must be a plain value, not a list or object.")
        return data


class JobCreateInputSerializer(JobInputSerializer):
    name = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=200,
        trim_whitespace=False,
        validators=[RegexValidator(r"^[^\x00-\x1f\x7f]+$", "A job name cannot hold control characters.")],
    )
    script = serializers.CharField(
        trim_whitespace=False,
        validators=[
            RegexValidator(r"^#![^\x00]*\Z", "The script must start with an interpreter line such as #!/bin/bash.")
        ],
        help_text="The sbatch script; it starts with an interpreter line such as #!/bin/bash",
    )
    parameters = ParametersField(required=False, default=dict, help_text="Exported to the job as environment variables")
    dataset_versions = serializers.ListField(
        child=serializers.UUIDField(), required=False, default=list, help_text="Dataset version ids used as inputs"
    )
    code = CodeInputSerializer(required=False, allow_null=True, default=None)
    image = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="Apptainer image on the cluster"
    )
    verify_datasets = serializers.BooleanField(required=False, default=False)
    register_model_as = serializers.CharField(required=False, allow_blank=True, default="")


class ProblemSerializer(serializers.Serializer):
    line = serializers.IntegerField(allow_null=True)
    message = serializers.CharField()


class ValidationOutputSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    effective_request = serializers.DictField()
    problems = ProblemSerializer(many=True)


class JobTaskOutputSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    slurm_job_id = serializers.CharField()
    state = serializers.CharField()
    reason = serializers.CharField()
    exit_code = serializers.IntegerField(allow_null=True)
    accounting = serializers.DictField()


class JobOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    name = serializers.CharField()
    status = serializers.CharField()
    cluster = serializers.CharField(source="cluster.name")
    cluster_username = serializers.CharField()
    slurm_job_id = serializers.CharField()
    slurm_state = serializers.CharField()
    reason = serializers.CharField()
    estimated_start = serializers.DateTimeField(allow_null=True)
    parameters = serializers.DictField()
    effective_request = serializers.DictField()
    script_sha256 = serializers.CharField()
    accounting = serializers.DictField()
    exit_code = serializers.IntegerField(allow_null=True)
    failure_message = serializers.CharField()
    last_error = serializers.CharField()
    created_at = serializers.DateTimeField()
    submitted_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    rerun_of = serializers.UUIDField(source="rerun_of.uuid", allow_null=True, default=None)
    reproduced_from = serializers.UUIDField(source="reproduced_from.uuid", allow_null=True, default=None)
    mlflow_experiment_id = serializers.CharField()
    mlflow_run_id = serializers.CharField()
    metrics = serializers.DictField()
    inputs = serializers.SerializerMethodField()

    def get_inputs(self, job) -> dict:
        return job_inputs(job)


class JobListItemSerializer(serializers.Serializer):
    """A job as the list shows it: what it is and where it stands, without the script, its
    request, accounting, parameters, metrics or inputs (the detail endpoint has them)."""

    id = serializers.UUIDField(source="uuid")
    name = serializers.CharField()
    status = serializers.CharField()
    cluster = serializers.CharField(source="cluster.name")
    slurm_job_id = serializers.CharField()
    slurm_state = serializers.CharField()
    reason = serializers.CharField()
    exit_code = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()
    submitted_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    mlflow_run_id = serializers.CharField()


# The columns the list reads: the wide ones (script, request, accounting, metrics) stay on disk.
LIST_COLUMNS = [
    "id",
    "uuid",
    "name",
    "status",
    "cluster__name",
    "slurm_job_id",
    "slurm_state",
    "reason",
    "exit_code",
    "created_at",
    "submitted_at",
    "started_at",
    "finished_at",
    "mlflow_run_id",
]


class JobDetailOutputSerializer(JobOutputSerializer):
    script = serializers.CharField()
    tasks = JobTaskOutputSerializer(many=True, source="tasks.all")


def job_inputs(job) -> dict:
    """Everything recorded about what the job was made from."""
    return {
        "script_sha256": job.script_sha256,
        "parameters": job.parameters,
        "cluster": job.cluster.name,
        "partition": (job.effective_request or {}).get("partition"),
        "effective_request": job.effective_request,
        "dataset_versions": [
            {
                "id": str(v.uuid),
                "dataset": v.dataset.name,
                "number": v.number,
                "checksum": v.checksum,
                "location": v.path or v.uri,
            }
            for v in job.dataset_versions.all()
        ],
        "code": {"repo": job.code_repo, "ref": job.code_ref, "commit": job.code_commit} if job.code_repo else None,
        "image": {"path": job.image_path, "digest": job.image_digest} if job.image_path else None,
    }


def _cluster(request, ident):
    return cluster_get(user=request.user, ident=ident)


class JobValidateApi(APIView):
    @extend_schema(request=JobInputSerializer, responses={200: ValidationOutputSerializer, **errors(404)})
    def post(self, request):
        data = JobInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result, _ = services.job_validate(
            user=request.user,
            cluster=_cluster(request, data.validated_data["cluster"]),
            script=data.validated_data["script"],
            parameters=data.validated_data["parameters"],
        )
        return Response({"ok": result.ok, "effective_request": result.effective_request, "problems": result.problems})


class JobListFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=["active", *Job.Status.values], required=False, allow_blank=True, help_text="active: not ended yet"
    )
    cluster = serializers.CharField(required=False, allow_blank=True, help_text="Cluster name")


class JobListCreateApi(APIView):
    pagination_class = KeysetPagination

    @extend_schema(
        parameters=[JobListFilterSerializer], responses={200: JobListItemSerializer(many=True), **errors(400)}
    )
    def get(self, request):
        filters = JobListFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        jobs = selectors.job_list(
            user=request.user,
            status=filters.validated_data.get("status", ""),
            cluster=filters.validated_data.get("cluster", ""),
        )
        paginator = self.pagination_class()
        lean = jobs.select_related(None).select_related("cluster").prefetch_related(None).only(*LIST_COLUMNS)
        page = paginator.paginate_queryset(lean, request, view=self)
        return paginator.get_paginated_response(JobListItemSerializer(page, many=True).data)

    @extend_schema(
        request=JobCreateInputSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Any unique string (a UUID) per job: a request sent again with the same key, "
                "after a lost answer, returns the job the first one created instead of creating another.",
            )
        ],
        responses={201: JobOutputSerializer, **errors(404, 409, 503)},
    )
    def post(self, request):
        data = JobCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        key = request.headers.get("Idempotency-Key", "").strip()
        if len(key) > 128:
            raise ValidationFailed("The Idempotency-Key header is at most 128 characters.")
        job = services.job_create(
            idempotency_key=key,
            user=request.user,
            cluster=_cluster(request, d["cluster"]),
            name=d["name"],
            script=d["script"],
            parameters=d["parameters"],
            dataset_versions=d["dataset_versions"],
            code=d["code"],
            image=d["image"],
            verify_datasets=d["verify_datasets"],
            register_model_as=d["register_model_as"],
        )
        job.refresh_from_db()
        return Response(JobOutputSerializer(job).data, status=201)


class JobBatchItemSerializer(serializers.Serializer):
    # The same fields, checks and help as one job's POST (the batch takes plain jobs only).
    name = JobCreateInputSerializer._declared_fields["name"]
    script = JobCreateInputSerializer._declared_fields["script"]
    parameters = JobCreateInputSerializer._declared_fields["parameters"]


class JobBatchInputSerializer(serializers.Serializer):
    cluster = serializers.CharField(help_text="Cluster name or id")
    # A ListField, not many=True: its length limits reach the schema (minItems, maxItems).
    jobs = serializers.ListField(child=JobBatchItemSerializer(), min_length=1, max_length=MAX_BATCH)


class JobBatchOutputSerializer(serializers.Serializer):
    jobs = JobOutputSerializer(many=True)


class JobBatchCreateApi(APIView):
    """Many plain jobs on one cluster in one request, all or none (`services.job_create_many`)."""

    @extend_schema(
        request=JobBatchInputSerializer,
        responses={201: JobBatchOutputSerializer, **errors(404)},
        description="Create up to 1,000 jobs (a script, a name and parameters each) on one cluster in one "
        "request, all or none: if any job does not fit the grant, none is created and the 400 answer lists "
        "each refused job by its index (`jobs`: [{index, problems}]). Jobs with inputs (code, image, "
        "datasets) or an Idempotency-Key go through POST /api/v1/jobs/ one by one.",
    )
    def post(self, request):
        data = JobBatchInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        jobs = services.job_create_many(user=request.user, cluster=_cluster(request, d["cluster"]), jobs=d["jobs"])
        return Response(JobBatchOutputSerializer({"jobs": jobs}).data, status=201)


class JobDetailApi(APIView):
    @extend_schema(responses=JobDetailOutputSerializer)
    def get(self, request, job_id):
        job = selectors.job_get(user=request.user, job_id=job_id)
        selectors.job_run_find(job=job)
        return Response(JobDetailOutputSerializer(job).data)


class JobCancelApi(APIView):
    @extend_schema(request=None, responses={200: JobOutputSerializer, **errors(409, 503)})
    def post(self, request, job_id):
        job = services.job_cancel(user=request.user, job=selectors.job_get(user=request.user, job_id=job_id))
        return Response(JobOutputSerializer(job).data)


class JobRerunApi(APIView):
    @extend_schema(request=None, responses={201: JobOutputSerializer, **errors(400, 503)})
    def post(self, request, job_id):
        job = services.job_rerun(user=request.user, job=selectors.job_get(user=request.user, job_id=job_id))
        job.refresh_from_db()
        return Response(JobOutputSerializer(job).data, status=201)


class JobLogsOutputSerializer(serializers.Serializer):
    stream = serializers.CharField()
    text = serializers.CharField()
    offset = serializers.IntegerField()
    next_offset = serializers.IntegerField()
    missing = serializers.BooleanField()
    message = serializers.CharField()


class JobLogsQuerySerializer(serializers.Serializer):
    stream = serializers.ChoiceField(choices=["stdout", "stderr"], default="stdout")
    offset = serializers.IntegerField(min_value=0, max_value=2**62, default=0, help_text="Byte offset to read from")
    # An index, never a path fragment: it is put into the log file's name.
    task = serializers.RegexField(r"^[0-9]{1,10}$", required=False, allow_blank=True, help_text="Array task index")


class JobLogsApi(APIView):
    @extend_schema(parameters=[JobLogsQuerySerializer], responses={200: JobLogsOutputSerializer, **errors(400, 503)})
    def get(self, request, job_id):
        job = selectors.job_get(user=request.user, job_id=job_id)
        query = JobLogsQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        stream, offset = query.validated_data["stream"], query.validated_data["offset"]
        chunk = selectors.job_log_read(
            job=job, stream=stream, offset=offset, task=query.validated_data.get("task") or None
        )
        return Response(
            {
                "stream": stream,
                "text": chunk.text,
                "offset": offset,
                "next_offset": chunk.next_offset,
                "missing": chunk.missing,
                "message": chunk.message,
            }
        )


class JobReproduceApi(APIView):
    @extend_schema(request=None, responses={201: JobOutputSerializer, **errors(400, 409, 503)})
    def post(self, request, job_id):
        job = services.job_reproduce(user=request.user, job=selectors.job_get(user=request.user, job_id=job_id))
        job.refresh_from_db()
        return Response(JobOutputSerializer(job).data, status=201)


class MetricPointSerializer(serializers.Serializer):
    step = serializers.IntegerField()
    value = serializers.FloatField()
    timestamp = serializers.IntegerField()


class JobMetricsOutputSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    metrics = serializers.DictField(child=MetricPointSerializer(many=True))


class JobMetricsApi(APIView):
    @extend_schema(responses={200: JobMetricsOutputSerializer, **errors(503)})
    def get(self, request, job_id):
        # The job page's chart asks this when its curves changed: one narrow row, not job_get's joins.
        fields = ("uuid", "status", "tracking_mode", "mlflow_experiment_id", "mlflow_run_id")
        job = selectors.job_get_fields(user=request.user, job_id=job_id, fields=fields)
        metrics = selectors.job_metric_history(job=job)  # first: it may find the job's run
        return Response({"run_id": job.mlflow_run_id, "metrics": metrics})
