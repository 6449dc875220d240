"""An environment served by KServe, driven by the serving app against the Kubernetes API
stand-in (Kubernetes cannot run here; the stand-in validates against KServe's CRD schema)."""

import pytest
import yaml

from apps.core import crypto
from apps.serving import rollout, services
from apps.serving.models import Deployment, Environment
from tests.integrations.kserve.test_kserve_backend import kubeconfig
from tests.registry.conftest import make_job, make_model_version

D = Deployment.Status
TOKEN = "test-token-not-secret"


class ArtifactAsRecorded:
    def __init__(self, sha):
        self.sha = sha

    def model_sha256(self, uri):
        return self.sha


@pytest.fixture
def kserve_env(standin, db):
    standin.token = TOKEN
    config = {**kubeconfig(standin, TOKEN), "current-context": "axle-staging"}
    return Environment.objects.create(
        name="k8s-staging",
        required_approvals=0,
        backend="kserve",
        namespace="ml-staging",
        kubeconfig_encrypted=crypto.encrypt(yaml.safe_dump(config)),
    )


@pytest.fixture
def s3_version(alice, team, monkeypatch):
    version = make_model_version(make_job(alice, team=team), alice, name="digits")
    type(version).objects.filter(pk=version.pk).update(artifact_uri="s3://models/vision/digits/1/model")
    version.refresh_from_db()
    monkeypatch.setattr("apps.jobs.tracking.client", lambda: ArtifactAsRecorded(version.sha256))
    monkeypatch.setattr(rollout, "KSERVE_WAIT_SECONDS", 1)
    return version


def test_a_worker_killed_while_deploying_converges_to_one_inference_service(
    alice,
    kserve_env,
    s3_version,
    standin,
    monkeypatch,
):
    d = services.deployment_request(user=alice, model_version=s3_version, environment=kserve_env, reason="try")
    real_wait = rollout._wait

    def die(*args, **kwargs):  # the spec is applied; the worker dies before waiting
        raise SystemExit("worker killed")

    monkeypatch.setattr(rollout, "_wait", die)
    with pytest.raises(SystemExit):
        services.deployment_deploy(deployment_id=d.pk)
    monkeypatch.setattr(rollout, "_wait", real_wait)
    d.refresh_from_db()
    assert d.status == D.DEPLOYING
    isvc = standin.get(d.backend_name, "ml-staging")
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "s3://models/vision/digits/1/model"
    assert isvc["metadata"]["annotations"]["axle.io/artifact-sha256"] == s3_version.sha256

    # KServe reports the service ready; the restarted worker's reconciler records it live.
    standin.mark_ready(d.backend_name, "ml-staging")
    services.serving_reconcile()
    services.serving_reconcile()
    d.refresh_from_db()
    assert d.status == D.LIVE and d.url
    assert [key for key in standin.objects if key[0] == "ml-staging"] == [("ml-staging", d.backend_name)]


def test_a_canary_on_kserve_sets_the_traffic_split(
    alice,
    kserve_env,
    s3_version,
    standin,
    team,
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True):
        first = services.deployment_request(user=alice, model_version=s3_version, environment=kserve_env, reason="a")
    standin.mark_ready(first.backend_name, "ml-staging")
    services.serving_reconcile()
    first.refresh_from_db()
    assert first.status == D.LIVE
    v2 = make_model_version(make_job(alice, team=team), alice, name="digits")
    type(v2).objects.filter(pk=v2.pk).update(artifact_uri="s3://models/vision/digits/2/model", sha256=s3_version.sha256)
    v2.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        canary = services.deployment_request(
            user=alice, model_version=v2, environment=kserve_env, reason="b", canary_percent=10
        )
    isvc = standin.get(canary.backend_name, "ml-staging")
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert isvc["spec"]["predictor"]["model"]["storageUri"].endswith("/2/model")
