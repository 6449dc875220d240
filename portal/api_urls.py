from django.urls import include, path

from apps.accounts import api as accounts_api
from apps.clusters import api as clusters_api
from apps.datasets import api as datasets_api
from apps.jobs import api as jobs_api
from apps.lineage import api as lineage_api
from apps.pipelines import api as pipelines_api
from apps.registry import api as registry_api
from apps.serving import api as serving_api
from apps.sweeps import api as sweeps_api

urlpatterns = [
    path("auth/token/", accounts_api.TokenObtainApi.as_view(), name="api-token-obtain"),
    path("me/", accounts_api.MeApi.as_view(), name="api-me"),
    path("clusters/", clusters_api.ClusterListApi.as_view(), name="api-cluster-list"),
    path("clusters/<str:ident>/", clusters_api.ClusterDetailApi.as_view(), name="api-cluster-detail"),
    path("grants/", clusters_api.GrantListApi.as_view(), name="api-grant-list"),
    path("jobs/", jobs_api.JobListCreateApi.as_view(), name="api-job-list"),
    path("jobs/validate/", jobs_api.JobValidateApi.as_view(), name="api-job-validate"),
    path("jobs/batch/", jobs_api.JobBatchCreateApi.as_view(), name="api-job-batch"),
    path("jobs/<uuid:job_id>/", jobs_api.JobDetailApi.as_view(), name="api-job-detail"),
    path("jobs/<uuid:job_id>/cancel/", jobs_api.JobCancelApi.as_view(), name="api-job-cancel"),
    path("jobs/<uuid:job_id>/rerun/", jobs_api.JobRerunApi.as_view(), name="api-job-rerun"),
    path("jobs/<uuid:job_id>/logs/", jobs_api.JobLogsApi.as_view(), name="api-job-logs"),
    path("jobs/<uuid:job_id>/metrics/", jobs_api.JobMetricsApi.as_view(), name="api-job-metrics"),
    path("jobs/<uuid:job_id>/reproduce/", jobs_api.JobReproduceApi.as_view(), name="api-job-reproduce"),
    path("sweeps/", sweeps_api.SweepListCreateApi.as_view(), name="api-sweep-list"),
    path("sweeps/validate/", sweeps_api.SweepValidateApi.as_view(), name="api-sweep-validate"),
    path("sweeps/<uuid:sweep_id>/", sweeps_api.SweepDetailApi.as_view(), name="api-sweep-detail"),
    path("sweeps/<uuid:sweep_id>/trials/", sweeps_api.SweepTrialsApi.as_view(), name="api-sweep-trials"),
    path("sweeps/<uuid:sweep_id>/stop/", sweeps_api.SweepStopApi.as_view(), name="api-sweep-stop"),
    path("sweeps/<uuid:sweep_id>/extend/", sweeps_api.SweepExtendApi.as_view(), name="api-sweep-extend"),
    path("pipelines/", pipelines_api.PipelineListCreateApi.as_view(), name="api-pipeline-list"),
    path("pipelines/<uuid:pipeline_id>/", pipelines_api.PipelineDetailApi.as_view(), name="api-pipeline-detail"),
    path("pipelines/<uuid:pipeline_id>/run/", pipelines_api.PipelineRunStartApi.as_view(), name="api-pipeline-run"),
    path("pipeline-runs/", pipelines_api.PipelineRunListApi.as_view(), name="api-pipeline-run-list"),
    path("pipeline-runs/<uuid:run_id>/", pipelines_api.PipelineRunDetailApi.as_view(), name="api-pipeline-run-detail"),
    path(
        "pipeline-runs/<uuid:run_id>/cancel/",
        pipelines_api.PipelineRunCancelApi.as_view(),
        name="api-pipeline-run-cancel",
    ),
    path(
        "pipeline-runs/<uuid:run_id>/retry/", pipelines_api.PipelineRunRetryApi.as_view(), name="api-pipeline-run-retry"
    ),
    path("", include("apps.pipelines.triggers.api_urls")),
    path("datasets/", datasets_api.DatasetListCreateApi.as_view(), name="api-dataset-list"),
    path("datasets/<uuid:dataset_id>/", datasets_api.DatasetDetailApi.as_view(), name="api-dataset-detail"),
    path(
        "datasets/<uuid:dataset_id>/versions/",
        datasets_api.DatasetVersionListCreateApi.as_view(),
        name="api-dataset-version-list",
    ),
    path(
        "datasets/<uuid:dataset_id>/versions/<int:number>/",
        datasets_api.DatasetVersionDetailApi.as_view(),
        name="api-dataset-version-detail",
    ),
    path("models/", registry_api.ModelListCreateApi.as_view(), name="api-model-list"),
    path("models/<str:name>/", registry_api.ModelDetailApi.as_view(), name="api-model-detail"),
    path(
        "models/<str:name>/versions/", registry_api.ModelVersionListCreateApi.as_view(), name="api-model-version-list"
    ),
    path(
        "models/<str:name>/versions/<int:number>/",
        registry_api.ModelVersionDetailApi.as_view(),
        name="api-model-version-detail",
    ),
    path("lineage/", lineage_api.LineageApi.as_view(), name="api-lineage"),
    path("environments/", serving_api.EnvironmentListApi.as_view(), name="api-environment-list"),
    path("deployments/", serving_api.DeploymentListCreateApi.as_view(), name="api-deployment-list"),
    path("deployments/<uuid:deployment_id>/", serving_api.DeploymentDetailApi.as_view(), name="api-deployment-detail"),
    path(
        "deployments/<uuid:deployment_id>/approve/",
        serving_api.DeploymentApproveApi.as_view(),
        name="api-deployment-approve",
    ),
    path(
        "deployments/<uuid:deployment_id>/reject/",
        serving_api.DeploymentRejectApi.as_view(),
        name="api-deployment-reject",
    ),
    path(
        "deployments/<uuid:deployment_id>/withdraw/",
        serving_api.DeploymentWithdrawApi.as_view(),
        name="api-deployment-withdraw",
    ),
    path(
        "deployments/<uuid:deployment_id>/rollback/",
        serving_api.DeploymentRollbackApi.as_view(),
        name="api-deployment-rollback",
    ),
    path(
        "deployments/<uuid:deployment_id>/predict/",
        serving_api.DeploymentPredictApi.as_view(),
        name="api-deployment-predict",
    ),
]
