from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from apps.accounts import views as account_views
from apps.accounts.forms import PasswordChangeForm
from apps.audit import views as audit_views
from apps.clusters import views as cluster_views
from apps.core import views as core_views
from apps.core.api_docs import ApiDocsView
from apps.datasets import views as dataset_views
from apps.identity import oidc
from apps.jobs import preflight_views as job_preflight_views
from apps.jobs import views as job_views
from apps.lineage import views as lineage_views
from apps.pipelines import views as pipeline_views
from apps.registry import views as registry_views
from apps.serving import views as serving_views
from apps.sweeps import preflight_views as sweep_preflight_views
from apps.sweeps import views as sweep_views
from apps.usage import views as usage_views

from . import dashboard

handler404 = "apps.core.api.not_found"
handler403 = "apps.core.views.permission_denied"
handler500 = "apps.core.views.server_error"

urlpatterns = [
    path("", dashboard.home, name="home"),
    path("healthz", core_views.healthz, name="healthz"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("oidc/authenticate/", login_not_required(oidc.AuthenticateView.as_view()), name="oidc_authentication_init"),
    path("oidc/callback/", login_not_required(oidc.CallbackView.as_view()), name="oidc_authentication_callback"),
    path("sso/failed/", login_not_required(oidc.sso_failed), name="sso-failed"),
    path(
        "password/change/",
        auth_views.PasswordChangeView.as_view(form_class=PasswordChangeForm),
        name="password_change",
    ),
    path("password/change/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("tokens/", account_views.token_list, name="token-list"),
    path("tokens/<uuid:token_uuid>/revoke/", account_views.token_revoke, name="token-revoke"),
    path("audit/", audit_views.audit_list, name="audit-list"),
    path("audit/export.csv", audit_views.audit_export, {"fmt": "csv"}, name="audit-export-csv"),
    path("audit/export.jsonl", audit_views.audit_export, {"fmt": "jsonl"}, name="audit-export-jsonl"),
    # Pipeline triggers: the forges' webhook (public, signed) and the triggers section's forms.
    path("", include("apps.pipelines.triggers.urls")),
    path("sweeps/", sweep_views.sweep_list, name="sweep-list"),
    path("sweeps/new/", sweep_views.sweep_new, name="sweep-new"),
    path("sweeps/check/", sweep_views.sweep_check, name="sweep-check"),
    path("sweeps/preflight/", sweep_preflight_views.sweep_preflight_panel, name="sweep-preflight"),
    path("sweeps/<uuid:sweep_id>/", sweep_views.sweep_detail, name="sweep-detail"),
    path("sweeps/<uuid:sweep_id>/stop/", sweep_views.sweep_stop, name="sweep-stop"),
    path("sweeps/<uuid:sweep_id>/extend/", sweep_views.sweep_extend, name="sweep-extend"),
    path("pipelines/", pipeline_views.pipeline_list, name="pipeline-list"),
    path("pipelines/<uuid:pipeline_id>/", pipeline_views.pipeline_detail, name="pipeline-detail"),
    path("pipelines/<uuid:pipeline_id>/run/", pipeline_views.pipeline_run, name="pipeline-run"),
    path("pipeline-runs/<uuid:run_id>/", pipeline_views.pipeline_run_detail, name="pipeline-run-detail"),
    path("pipeline-runs/<uuid:run_id>/cancel/", pipeline_views.pipeline_run_cancel, name="pipeline-run-cancel"),
    path("pipeline-runs/<uuid:run_id>/retry/", pipeline_views.pipeline_run_retry, name="pipeline-run-retry"),
    path("jobs/", job_views.job_list, name="job-list"),
    path("jobs/new/", job_views.job_new, name="job-new"),
    path("jobs/preflight/", job_preflight_views.job_preflight_panel, name="job-preflight"),
    path("jobs/<uuid:job_id>/", job_views.job_detail, name="job-detail"),
    path("jobs/<uuid:job_id>/cancel/", job_views.job_cancel, name="job-cancel"),
    path("jobs/<uuid:job_id>/rerun/", job_views.job_rerun, name="job-rerun"),
    path("jobs/<uuid:job_id>/reproduce/", job_views.job_reproduce, name="job-reproduce"),
    path("jobs/<uuid:job_id>/artifacts/", job_views.job_artifacts, name="job-artifacts"),
    path("jobs/<uuid:job_id>/artifacts/download/", job_views.job_artifact_download, name="job-artifact-download"),
    path("jobs/compare/", job_views.job_compare, name="job-compare"),
    path("jobs/bulk/", job_views.job_bulk, name="job-bulk"),
    path("jobs/<uuid:job_id>/logs/", job_views.job_logs, name="job-logs"),
    path("jobs/<uuid:job_id>/logs/<str:stream>/download/", job_views.job_log_download, name="job-log-download"),
    path("datasets/", dataset_views.dataset_list, name="dataset-list"),
    path("datasets/<uuid:dataset_id>/", dataset_views.dataset_detail, name="dataset-detail"),
    path(
        "datasets/<uuid:dataset_id>/versions/<int:number>/",
        dataset_views.dataset_version_detail,
        name="dataset-version-detail",
    ),
    path("models/", registry_views.model_list, name="model-list"),
    path("models/register/", registry_views.model_register, name="model-register"),
    path("models/<str:name>/", registry_views.model_detail, name="model-detail"),
    path("lineage/<slug:kind>/<uuid:id>/", lineage_views.lineage, name="lineage"),
    path("deployments/", serving_views.deployment_list, name="deployment-list"),
    path("deployments/inbox/", serving_views.deployment_inbox, name="deployment-inbox"),
    path("deployments/new/", serving_views.deployment_new, name="deployment-new"),
    path("deployments/<uuid:deployment_id>/", serving_views.deployment_detail, name="deployment-detail"),
    path("deployments/<uuid:deployment_id>/try/", serving_views.deployment_try, name="deployment-try"),
    path("deployments/<uuid:deployment_id>/<slug:action>/", serving_views.deployment_action, name="deployment-action"),
    path("clusters/", cluster_views.cluster_list, name="cluster-list"),
    path("clusters/<slug:name>/", cluster_views.cluster_detail, name="cluster-detail"),
    path("clusters/<slug:name>/request/", cluster_views.cluster_request_access, name="cluster-request-access"),
    path("grants/", cluster_views.grant_list, name="grant-list"),
    path("usage/", usage_views.usage, name="usage"),
    path("usage/export.csv", usage_views.usage_export, name="usage-export"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", ApiDocsView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/", include("portal.api_urls")),
]
