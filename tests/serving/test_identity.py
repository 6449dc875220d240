"""A model server belongs to one deployment: names never collide, and a backend never hands
one deployment's server to another (issue 8, finding 2)."""

import re
import uuid

import pytest
import yaml

from apps.accounts.models import Membership
from apps.core import crypto
from apps.serving import services
from apps.serving.models import Deployment, Environment
from apps.serving.specs import KSERVE_MAX_NAME, backend_name, kserve_max_name, name_of
from tests.factories import MembershipFactory, TeamFactory, UserFactory
from tests.integrations.kserve.test_kserve_backend import kubeconfig
from tests.registry.conftest import make_job, make_model_version

from . import test_four_eyes as four_eyes

FakeBackend = four_eyes.FakeBackend
artifact = four_eyes.artifact  # the fixtures of the four-eyes tests
fake_backend = four_eyes.fake_backend

D = Deployment.Status
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


@pytest.mark.parametrize(
    "model",
    ["digits-classifier", "digits_classifier", "Digits.Classifier", "9lives", "x" * 200, "a--b__c", "ÜBER-modell"],
)
def test_names_are_dns_1035_labels_that_fit_kubernetes(model):
    for env in ("staging", "production"):
        name = backend_name(model_name=model, environment_name=env, owner=str(uuid.uuid4()))
        assert DNS_1035.match(name) and len(name) <= 63, name


@pytest.mark.parametrize("namespace", ["ml", "ml-staging", "team-vision-production-inference"])
def test_kserve_names_leave_room_for_the_names_kserve_and_knative_derive_from_them(namespace):
    owner = str(uuid.uuid4())
    name = backend_name(
        model_name="x" * 200, environment_name="k8s", owner=owner, max_length=kserve_max_name(namespace)
    )

    assert DNS_1035.match(name) and len(name) <= KSERVE_MAX_NAME, name
    for derived in (f"{name}-predictor", f"{name}-predictor-00001", f"{name}-predictor-{namespace}"):
        assert len(derived) <= 63, derived
    # The owner's hash is kept whole, so two owners never meet on one shortened name.
    assert name.endswith(backend_name(model_name="y", environment_name="k8s", owner=owner)[-11:])


@pytest.mark.django_db
def test_a_kserve_deployment_of_a_long_model_name_gets_a_name_that_fits_kserve(alice, team):
    model_name = "vision-digits-classifier-trained-on-the-full-scan-set-2026-11"
    v = make_model_version(make_job(alice, team=team), alice, name=model_name)
    kserve = Environment.objects.create(name="k8s-prod", backend="kserve", namespace="ml-production")
    local = Environment.objects.create(name="staging", required_approvals=0)

    on_kserve = name_of(Deployment(model_version=v, environment=kserve, requested_by=alice))
    on_local = name_of(Deployment(model_version=v, environment=local, requested_by=alice))

    # The host label `<name>-predictor-ml-production` is what binds here: exactly 63.
    assert len(on_kserve) == 39 < KSERVE_MAX_NAME and len(f"{on_kserve}-predictor-ml-production") == 63
    assert len(on_local) == 63


def test_names_that_read_alike_stay_apart():
    owners = [str(uuid.uuid4()) for _ in range(200)]
    names = {backend_name(model_name="digits_classifier", environment_name="staging", owner=o) for o in owners}
    assert len(names) == 200


def _live(user, version, env, capture):
    with capture(execute=True):
        d = services.deployment_request(user=user, model_version=version, environment=env, reason="ship it")
    d.refresh_from_db()
    return d


@pytest.mark.django_db
def test_another_teams_model_with_a_name_that_reads_the_same_gets_its_own_server(
    alice, team, artifact, django_capture_on_commit_callbacks
):
    staging = Environment.objects.create(name="staging", required_approvals=0)
    audio = TeamFactory(name="audio")
    carol = UserFactory(username="carol")
    MembershipFactory(user=carol, team=audio)
    vision_v = make_model_version(make_job(alice, team=team), alice, name="digits-classifier")
    audio_v = make_model_version(make_job(carol, team=audio), carol, name="digits_classifier")

    artifact["sha"] = vision_v.sha256
    vision = _live(alice, vision_v, staging, django_capture_on_commit_callbacks)
    artifact["sha"] = audio_v.sha256
    audio_d = _live(carol, audio_v, staging, django_capture_on_commit_callbacks)
    vision.refresh_from_db()

    assert (vision.status, audio_d.status) == (D.LIVE, D.LIVE)
    assert vision.backend_name != audio_d.backend_name
    served = {name: spec.model_name for (_, name), spec in FakeBackend.servers.items()}
    assert served == {vision.backend_name: "digits-classifier", audio_d.backend_name: "digits_classifier"}


@pytest.mark.django_db
def test_a_long_model_name_in_staging_leaves_the_approved_production_server_alone(
    alice, team, artifact, django_capture_on_commit_callbacks
):
    long_name = "vision-digits-classifier-trained-on-the-full-scan-set-2026-11-" + "x" * 10
    assert len(long_name) > 62
    staging = Environment.objects.create(name="staging", required_approvals=0)
    production = Environment.objects.create(name="production", required_approvals=1, approver_team=team)
    ann = MembershipFactory(user=UserFactory(username="ann"), team=team, role=Membership.Role.APPROVER).user
    v1 = make_model_version(make_job(alice, team=team), alice, name=long_name)
    artifact["sha"] = v1.sha256
    prod = services.deployment_request(user=alice, model_version=v1, environment=production, reason="approved")
    with django_capture_on_commit_callbacks(execute=True):
        services.deployment_approve(user=ann, deployment=prod)
    v2 = make_model_version(make_job(alice, team=team), alice, name=long_name)
    artifact["sha"] = v2.sha256

    trial = _live(alice, v2, staging, django_capture_on_commit_callbacks)
    prod.refresh_from_db()

    assert (prod.status, trial.status) == (D.LIVE, D.LIVE)
    assert prod.backend_name != trial.backend_name and len(prod.backend_name) <= 63
    assert FakeBackend.servers[("axle", prod.backend_name)].model_version == "1"
    assert FakeBackend.servers[("axle", trial.backend_name)].model_version == "2"


@pytest.mark.django_db
def test_a_collision_on_kserve_fails_the_newcomer_and_leaves_the_live_service_as_it_was(
    alice, team, standin, monkeypatch, django_capture_on_commit_callbacks
):
    from apps.serving import rollout

    monkeypatch.setattr("apps.serving.backends.backend_for", four_eyes.real_backend_for)
    monkeypatch.setattr(rollout, "KSERVE_WAIT_SECONDS", 0)
    standin.token = "t"
    config = yaml.safe_dump({**kubeconfig(standin, "t"), "current-context": "axle-staging"})
    envs = [
        Environment.objects.create(
            name=name,
            required_approvals=0,
            backend="kserve",
            namespace="ml-staging",
            kubeconfig_encrypted=crypto.encrypt(config),
        )
        for name in ("k8s-prod", "k8s-trial")
    ]
    versions = []
    for name in ("digits-classifier", "digits_classifier"):
        v = make_model_version(make_job(alice, team=team), alice, name=name)
        type(v).objects.filter(pk=v.pk).update(artifact_uri=f"s3://models/{name}/1")
        v.refresh_from_db()
        versions.append(v)
    monkeypatch.setattr("apps.registry.artifacts.model_version_artifact_check", lambda **kw: None)
    with django_capture_on_commit_callbacks(execute=True):
        first = services.deployment_request(user=alice, model_version=versions[0], environment=envs[0], reason="a")
    first.refresh_from_db()
    before = standin.get(first.backend_name, "ml-staging")

    # Force what the old naming did: two different models under one name.
    second = services.deployment_request(user=alice, model_version=versions[1], environment=envs[1], reason="b")
    Deployment.objects.filter(pk=second.pk).update(backend_name=first.backend_name)
    services.deployment_deploy(deployment_id=second.pk)
    second.refresh_from_db()

    assert second.status == D.FAILED and "another deployment" in second.last_error
    assert standin.get(first.backend_name, "ml-staging")["spec"] == before["spec"]
