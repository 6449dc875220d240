"""Every page form and API route that changes something leaves an audit event carrying the
request's id (NetBox's change-logging test, applied to the URL configuration).

The sweep reads the URL resolver: an API view with a post/put/patch/delete handler, a page
view that accepts POST (its code reads ``request.POST`` or says ``require_POST``) is a mutating
route. Each must have a case below that performs one successful change as a user who may,
or be listed as read-only with the reason. A route added later without either fails here."""

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from apps.accounts import services as account_services
from apps.accounts.models import Membership
from apps.audit.models import AuditEvent
from apps.datasets.models import Dataset
from apps.jobs.models import Job
from apps.pipelines.models import Pipeline, PipelineRun, StepRun
from apps.serving.models import Deployment, Environment
from apps.sweeps.models import Sweep
from tests.factories import PASSWORD, ClusterFactory, ClusterGrantFactory, MembershipFactory, UserFactory
from tests.registry.conftest import make_job, make_model_version
from tests.serving.conftest import trained_model  # noqa: F401  (a real model in MLflow, for the mlflow cases)

MUTATING_METHODS = ("post", "put", "patch", "delete")

# Routes that take a POST but change nothing, and why.
READ_ONLY = {
    "api-job-validate": "checks a script against the grant and answers; records nothing",
    "api-deployment-predict": "sends inputs to a live model server and returns its answer; changes nothing",
    "deployment-try": "the page form of api-deployment-predict",
    "api-sweep-validate": "checks a sweep spec against Katib's rules and the grant and answers; records nothing",
    "sweep-check": "the page form's live validation of api-sweep-validate",
    "job-preflight": "asks Slurm (sbatch --test-only, sshare) about the job form's script; submits and records nothing",
    "sweep-preflight": "the same for the sweep form's first job array; submits and records nothing",
}

# Routes whose path names what is done: every value the view accepts.
VARIANTS = {"deployment-action": ("approve", "reject", "withdraw", "rollback", "retire")}

SCRIPT = "#!/bin/bash\n#SBATCH --partition=debug\n#SBATCH --time=5\necho hello\n"
SWEEP = """apiVersion: kubeflow.org/v1beta1
kind: Experiment
metadata: {name: lr}
spec:
  objective: {type: minimize, objectiveMetricName: loss}
  algorithm: {algorithmName: random}
  parallelTrialCount: 2
  maxTrialCount: 3
  parameters:
    - {name: lr, parameterType: double, feasibleSpace: {min: "0.01", max: "0.1"}}
  trialTemplate:
    trialParameters: [{name: LR, reference: lr}]
    trialSpec: |
      #!/bin/bash
      #SBATCH --time=5
      echo ${trialParameters.LR}
"""


def _walk(patterns, namespace=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            if p.namespace == "admin":
                continue  # tests/audit/test_admin_is_audited.py sweeps the admin
            yield from _walk(p.url_patterns, namespace)
        elif isinstance(p, URLPattern) and p.name:
            yield p.name, p.callback


def _mutating(callback) -> bool:
    cls = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    if cls is not None:
        return any(hasattr(cls, m) for m in MUTATING_METHODS)
    return "POST" in inspect.getsource(inspect.unwrap(callback))


MUTATING_ROUTES = sorted({name for name, callback in _walk(get_resolver().url_patterns) if _mutating(callback)})


@dataclass
class Call:
    path: str
    data: dict = field(default_factory=dict)
    user: object | None = None  # None: anonymous
    api: bool = False
    body: bytes | None = None  # sent as it is (application/json), with `headers`: a forge's webhook
    headers: dict = field(default_factory=dict)


class World:
    """The personas and rows the cases act on, made when first asked for."""

    def __init__(self, alice, bob, charlie, team, settings, tmp_path):
        self.alice, self.bob, self.charlie, self.team = alice, bob, charlie, team
        settings.AXLE_SERVING_DIR = tmp_path / "serving"

    @cached_property
    def grant(self):
        return ClusterGrantFactory(user=self.alice, cluster=ClusterFactory(name="hpc1"), cluster_username="alice01")

    def job(self, status=Job.Status.COMPLETED, **fields):
        return make_job(self.alice, team=self.team, status=status, grant=self.grant, **fields)

    @cached_property
    def dataset(self):
        return Dataset.objects.create(team=self.team, name="iris", created_by=self.alice)

    @cached_property
    def approver(self):
        return MembershipFactory(user=UserFactory(username="ann"), team=self.team, role=Membership.Role.APPROVER).user

    @cached_property
    def production(self):
        return Environment.objects.create(name="production", required_approvals=1, approver_role="approver")

    @cached_property
    def version(self):
        return make_model_version(self.job(), self.alice, name="digits")

    def deployment(self, status=Deployment.Status.REQUESTED, **fields):
        return Deployment.objects.create(
            environment=self.production,
            model_version=self.version,
            requested_by=self.alice,
            reason="ship it",
            status=status,
            artifact_sha256=self.version.sha256,
            required_approvals=1,
            backend_name=f"digits-{Deployment.objects.count()}",
            **fields,
        )

    def live_with_previous(self):
        previous = self.deployment(status=Deployment.Status.RETIRED)
        return self.deployment(status=Deployment.Status.LIVE, replaces=previous)

    def sweep(self):
        from apps.sweeps import services as sweep_services

        grant = ClusterGrantFactory(
            user=self.alice, cluster=ClusterFactory(name=f"hpc-s{Sweep.objects.count()}"), cluster_username="alice01"
        )
        return sweep_services.sweep_create(user=self.alice, cluster=grant.cluster, spec_text=SWEEP)

    def token(self):
        return account_services.token_create(user=self.alice, name="laptop")[0]

    def pipeline(self, grant=None, repo_url="/nowhere.git"):
        grant = grant or self.grant
        return Pipeline.objects.create(
            team=self.team,
            owner=self.alice,
            name=f"p{Pipeline.objects.count()}",
            grant=grant,
            cluster=grant.cluster,
            repo_url=repo_url,
        )

    def pipeline_run(self, status=PipelineRun.Status.RUNNING, step_state=StepRun.State.WAITING):
        run = PipelineRun.objects.create(
            pipeline=self.pipeline(),
            number=1,
            status=status,
            commit="a" * 40,
            spec={"name": "one", "parameters": {}, "steps": [{"name": "only", "script": SCRIPT}]},
            folder="/scratch/alice01/run",
        )
        StepRun.objects.create(run=run, name="only", position=0, state=step_state)
        return run

    def cluster_pipeline(self):
        """A pipeline whose file is in a git repository on the real local cluster."""
        from tests.local_cluster import make_local_cluster, make_local_grant
        from tests.pipelines.conftest import ClusterRepo

        grant = make_local_grant(make_local_cluster("ssh", "local-ssh"), self.alice, "scientist")
        repo = ClusterRepo(grant)
        step = "#!/bin/bash\n#SBATCH --partition=debug\n#SBATCH --time=5\necho hi\n"
        repo.commit(
            {"axle-pipeline.yaml": "name: one\nsteps:\n  only:\n    script: only.sbatch\n", "only.sbatch": step}
        )
        return self.pipeline(grant=grant, repo_url=repo.path)

    def pipeline_with_webhook(self):
        from apps.pipelines.triggers.services import webhook_secret_rotate

        pipeline = self.pipeline()
        return pipeline, webhook_secret_rotate(user=self.alice, pipeline=pipeline)[1]

    def signed_push(self):
        """A GitHub push to the pipeline's branch, signed with its secret, as GitHub sends it."""
        from tests.pipelines.triggers.conftest import push_body, signed_headers

        pipeline, secret = self.pipeline_with_webhook()
        body = push_body()
        return Call(f"/hooks/pipelines/{pipeline.uuid}/", body=body, headers=signed_headers("github", secret, body))

    def schedule(self):
        from apps.pipelines.triggers.services import schedule_create

        return schedule_create(user=self.alice, pipeline=self.pipeline(), cron_expression="0 3 * * *")

    def trained_job(self, trained):
        _, run_id, _, _, _ = trained
        return self.job(mlflow_run_id=run_id)


def _new_password():
    return {
        "old_password": PASSWORD,
        "new_password1": "a new long passphrase",
        "new_password2": "a new long passphrase",
    }


CASES: dict[str, Callable[..., Call]] = {
    # pages
    "login": lambda w: Call("/login/", {"username": "alice", "password": PASSWORD}),
    "logout": lambda w: Call("/logout/", user=w.alice),
    "password_change": lambda w: Call("/password/change/", _new_password(), user=w.alice),
    "token-list": lambda w: Call("/tokens/", {"name": "ci"}, user=w.alice),
    "token-revoke": lambda w: Call(f"/tokens/{w.token().uuid}/revoke/", user=w.alice),
    "job-new": lambda w: Call(
        "/jobs/new/", {"cluster": w.grant.cluster.name, "name": "train", "script": SCRIPT}, user=w.alice
    ),
    "job-cancel": lambda w: Call(f"/jobs/{w.job(status=Job.Status.QUEUED).uuid}/cancel/", user=w.alice),
    "job-rerun": lambda w: Call(f"/jobs/{w.job().uuid}/rerun/", user=w.alice),
    "job-bulk": lambda w: Call(
        "/jobs/bulk/", {"action": "cancel", "id": [str(w.job(status=Job.Status.QUEUED).uuid)]}, user=w.alice
    ),
    "job-reproduce": lambda w: Call(f"/jobs/{w.job().uuid}/reproduce/", user=w.alice),
    "sweep-new": lambda w: Call("/sweeps/new/", {"cluster": w.grant.cluster.name, "spec": SWEEP}, user=w.alice),
    "sweep-stop": lambda w: Call(f"/sweeps/{w.sweep().uuid}/stop/", user=w.alice),
    "sweep-extend": lambda w: Call(f"/sweeps/{w.sweep().uuid}/extend/", {"trials": 2}, user=w.alice),
    "pipeline-list": lambda w: Call(
        "/pipelines/",
        {"team": "vision", "name": "digits", "cluster": w.grant.cluster.name, "repo_url": "/r.git", "branch": "main"},
        user=w.alice,
    ),
    "pipeline-run": lambda w: Call(f"/pipelines/{w.cluster_pipeline().uuid}/run/", user=w.alice),
    "pipeline-run-cancel": lambda w: Call(f"/pipeline-runs/{w.pipeline_run().uuid}/cancel/", user=w.alice),
    "pipeline-run-retry": lambda w: Call(
        f"/pipeline-runs/{w.pipeline_run(PipelineRun.Status.FAILED, StepRun.State.FAILED).uuid}/retry/", user=w.alice
    ),
    "dataset-list": lambda w: Call("/datasets/", {"team": "vision", "name": "iris"}, user=w.alice),
    "dataset-detail": lambda w: Call(
        f"/datasets/{w.dataset.uuid}/", {"kind": "uri", "uri": "s3://bucket/iris/1"}, user=w.bob
    ),
    "model-list": lambda w: Call("/models/", {"team": "vision", "name": "digits"}, user=w.alice),
    "model-register": lambda w, trained: Call(
        "/models/register/", {"job": str(w.trained_job(trained).uuid), "name": f"{trained[0]}-page"}, user=w.alice
    ),
    "deployment-new": lambda w: Call(
        "/deployments/new/",
        {"model": "digits", "version": str(w.version.number), "environment": w.production.name, "reason": "ship it"},
        user=w.alice,
    ),
    "deployment-action:approve": lambda w: Call(f"/deployments/{w.deployment().uuid}/approve/", user=w.approver),
    "deployment-action:reject": lambda w: Call(f"/deployments/{w.deployment().uuid}/reject/", user=w.approver),
    "deployment-action:withdraw": lambda w: Call(f"/deployments/{w.deployment().uuid}/withdraw/", user=w.alice),
    "deployment-action:rollback": lambda w: Call(f"/deployments/{w.live_with_previous().uuid}/rollback/", user=w.alice),
    "deployment-action:retire": lambda w: Call(
        f"/deployments/{w.deployment(status=Deployment.Status.LIVE).uuid}/retire/", user=w.alice
    ),
    "cluster-request-access": lambda w: Call(
        f"/clusters/{w.grant.cluster.name}/request/", {"reason": "GPU training"}, user=w.charlie
    ),
    "pipeline-webhook": lambda w: w.signed_push(),
    "pipeline-webhook-secret": lambda w: Call(f"/pipelines/{w.pipeline().uuid}/triggers/webhook/", user=w.alice),
    "pipeline-webhook-disable": lambda w: Call(
        f"/pipelines/{w.pipeline_with_webhook()[0].uuid}/triggers/webhook/disable/", user=w.alice
    ),
    "pipeline-polling": lambda w: Call(
        f"/pipelines/{w.pipeline().uuid}/triggers/polling/", {"enabled": "on", "interval_minutes": "5"}, user=w.alice
    ),
    "pipeline-schedule-add": lambda w: Call(
        f"/pipelines/{w.pipeline().uuid}/schedules/", {"cron": "0 3 * * 1-5", "timezone": "Europe/Berlin"}, user=w.alice
    ),
    "pipeline-schedule-remove": lambda w: (
        lambda s: Call(f"/pipelines/{s.pipeline.uuid}/schedules/{s.uuid}/remove/", user=w.alice)
    )(w.schedule()),
    # API
    "api-token-obtain": lambda w: Call(
        "/api/v1/auth/token/", {"username": "alice", "password": PASSWORD, "name": "cli"}, api=True
    ),
    "api-grant-list": lambda w: Call(
        "/api/v1/grants/", {"cluster": w.grant.cluster.name, "reason": "GPU training"}, user=w.charlie, api=True
    ),
    "api-job-list": lambda w: Call(
        "/api/v1/jobs/", {"cluster": w.grant.cluster.name, "name": "train", "script": SCRIPT}, user=w.alice, api=True
    ),
    "api-job-batch": lambda w: Call(
        "/api/v1/jobs/batch/",
        {"cluster": w.grant.cluster.name, "jobs": [{"name": "train", "script": SCRIPT}]},
        user=w.alice,
        api=True,
    ),
    "api-job-cancel": lambda w: Call(
        f"/api/v1/jobs/{w.job(status=Job.Status.QUEUED).uuid}/cancel/", user=w.alice, api=True
    ),
    "api-job-rerun": lambda w: Call(f"/api/v1/jobs/{w.job().uuid}/rerun/", user=w.alice, api=True),
    "api-job-reproduce": lambda w: Call(f"/api/v1/jobs/{w.job().uuid}/reproduce/", user=w.alice, api=True),
    "api-sweep-list": lambda w: Call(
        "/api/v1/sweeps/", {"cluster": w.grant.cluster.name, "spec": SWEEP}, user=w.alice, api=True
    ),
    "api-sweep-stop": lambda w: Call(f"/api/v1/sweeps/{w.sweep().uuid}/stop/", user=w.alice, api=True),
    "api-sweep-extend": lambda w: Call(
        f"/api/v1/sweeps/{w.sweep().uuid}/extend/", {"trials": 2}, user=w.alice, api=True
    ),
    "api-pipeline-list": lambda w: Call(
        "/api/v1/pipelines/",
        {"team": "vision", "name": "digits", "cluster": w.grant.cluster.name, "repo_url": "/r.git"},
        user=w.alice,
        api=True,
    ),
    "api-pipeline-run": lambda w: Call(f"/api/v1/pipelines/{w.cluster_pipeline().uuid}/run/", user=w.alice, api=True),
    "api-pipeline-webhook-secret": lambda w: Call(
        f"/api/v1/pipelines/{w.pipeline().uuid}/triggers/webhook/", user=w.alice, api=True
    ),
    "api-pipeline-webhook-disable": lambda w: Call(
        f"/api/v1/pipelines/{w.pipeline_with_webhook()[0].uuid}/triggers/webhook/disable/", user=w.alice, api=True
    ),
    "api-pipeline-polling": lambda w: Call(
        f"/api/v1/pipelines/{w.pipeline().uuid}/triggers/polling/", {"enabled": True}, user=w.alice, api=True
    ),
    "api-pipeline-schedule-list": lambda w: Call(
        f"/api/v1/pipelines/{w.pipeline().uuid}/schedules/", {"cron": "*/30 * * * *"}, user=w.alice, api=True
    ),
    "api-pipeline-schedule-remove": lambda w: (
        lambda s: Call(f"/api/v1/pipelines/{s.pipeline.uuid}/schedules/{s.uuid}/remove/", user=w.alice, api=True)
    )(w.schedule()),
    "api-pipeline-run-cancel": lambda w: Call(
        f"/api/v1/pipeline-runs/{w.pipeline_run().uuid}/cancel/", user=w.alice, api=True
    ),
    "api-pipeline-run-retry": lambda w: Call(
        f"/api/v1/pipeline-runs/{w.pipeline_run(PipelineRun.Status.FAILED, StepRun.State.FAILED).uuid}/retry/",
        user=w.alice,
        api=True,
    ),
    "api-dataset-list": lambda w: Call("/api/v1/datasets/", {"team": "vision", "name": "iris"}, user=w.alice, api=True),
    "api-dataset-version-list": lambda w: Call(
        f"/api/v1/datasets/{w.dataset.uuid}/versions/", {"uri": "s3://bucket/iris/1"}, user=w.alice, api=True
    ),
    "api-model-list": lambda w: Call("/api/v1/models/", {"team": "vision", "name": "digits"}, user=w.alice, api=True),
    "api-model-version-list": lambda w, trained: Call(
        f"/api/v1/models/{trained[0]}-api/versions/", {"job": str(w.trained_job(trained).uuid)}, user=w.alice, api=True
    ),
    "api-deployment-list": lambda w: Call(
        "/api/v1/deployments/",
        {"model": "digits", "version": w.version.number, "environment": w.production.name, "reason": "ship it"},
        user=w.alice,
        api=True,
    ),
    "api-deployment-approve": lambda w: Call(
        f"/api/v1/deployments/{w.deployment().uuid}/approve/", user=w.approver, api=True
    ),
    "api-deployment-reject": lambda w: Call(
        f"/api/v1/deployments/{w.deployment().uuid}/reject/", user=w.approver, api=True
    ),
    "api-deployment-withdraw": lambda w: Call(
        f"/api/v1/deployments/{w.deployment().uuid}/withdraw/", user=w.alice, api=True
    ),
    "api-deployment-rollback": lambda w: Call(
        f"/api/v1/deployments/{w.live_with_previous().uuid}/rollback/", user=w.alice, api=True
    ),
}

# Cases that register a model version in the real MLflow (the registry re-reads the run's
# model and hashes it there).
NEEDS_MLFLOW = {"model-register", "api-model-version-list"}
# Cases that read a pipeline file from a git repository on the real local cluster.
NEEDS_SLURM = {"pipeline-run", "api-pipeline-run"}


def _params():
    for key in sorted(CASES):
        marks = [pytest.mark.mlflow] if key in NEEDS_MLFLOW else []
        marks += [pytest.mark.slurm] if key in NEEDS_SLURM else []
        yield pytest.param(key, marks=marks, id=key)


def test_the_sweep_finds_the_mutating_routes():
    assert {"token-list", "job-new", "api-job-list", "deployment-action", "login"} <= set(MUTATING_ROUTES)
    assert "job-list" not in MUTATING_ROUTES and "api-me" not in MUTATING_ROUTES


def test_every_mutating_route_has_a_case_or_a_reason():
    covered = {key.split(":")[0] for key in CASES} | set(READ_ONLY)
    assert set(MUTATING_ROUTES) - covered == set(), "mutating routes without a case in CASES"
    assert covered - set(MUTATING_ROUTES) == set(), "stale cases or read-only entries"
    for name, values in VARIANTS.items():
        assert {f"{name}:{v}" for v in values} <= set(CASES), f"every {name} variant needs a case"


@pytest.fixture
def world(alice, bob, charlie, team, settings, tmp_path):
    return World(alice, bob, charlie, team, settings, tmp_path)


@pytest.mark.django_db
@pytest.mark.parametrize("key", list(_params()))
def test_a_successful_change_is_audited_with_the_request_id(key, world, request):
    make = CASES[key]
    args = [request.getfixturevalue("trained_model")] if key in NEEDS_MLFLOW else []
    call = make(world, *args)
    if call.api:
        client = APIClient()
        if call.user is not None:
            _, secret = account_services.token_create(user=call.user, name="sweep")
            client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
        response = client.post(call.path, call.data, format="json")
    else:
        client = request.getfixturevalue("client")
        if call.user is not None:
            client.force_login(call.user)
        if call.body is not None:
            response = client.post(call.path, call.body, content_type="application/json", **call.headers)
        else:
            response = client.post(call.path, call.data)
    assert response.status_code < 400, response.content.decode()[:2000]
    if not call.api and response.status_code == 302:
        # A page reports a refusal as a message on the page it redirects to; a success never does.
        followed = client.get(response["Location"])
        assert 'class="flash error"' not in followed.content.decode(), followed.content.decode()[:3000]
    events = AuditEvent.objects.filter(request_id=response["X-Request-ID"])
    assert events.exists(), f"{key} answered {response.status_code} but left no audit event with its request id"
    if call.user is not None:
        assert events.filter(actor=call.user).exists()
