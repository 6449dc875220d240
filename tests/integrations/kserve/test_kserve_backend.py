"""The KServe backend through a real `kubernetes` ApiClient against the Kubernetes API
stand-in, which validates every object against KServe's CRD schema."""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from apps.integrations.kserve import backend as backend_module
from apps.integrations.kserve.backend import KServeBackend
from apps.integrations.kserve.manifest import inference_service
from apps.integrations.serving.base import DeploymentSpec, Resources, ServingBackend, ServingError
from tests.integrations.kserve.conftest import api_client_for
from tests.integrations.kserve.standin import KubernetesStandIn

NS = "ml-staging"
TOKEN = "axle-test-token-5f0c2a9e7d"
ROWS = {"inputs": [{"name": "input-0", "shape": [2, 3], "datatype": "FP64", "data": [[1, 2, 3], [4, 5, 6]]}]}


def digits(**changes: Any) -> DeploymentSpec:
    spec = DeploymentSpec(
        name="digits",
        namespace=NS,
        model_name="digits",
        model_version="3",
        model_uri="s3://axle-models/vision/digits/3/model",
        artifact_sha256="ab" * 32,
    )
    return dataclasses.replace(spec, **changes)


def foreign_isvc(standin: KubernetesStandIn, name: str, namespace: str = NS, labels: dict | None = None) -> None:
    """An InferenceService someone else made by hand, through the real API path."""
    body = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {"team": "recsys"}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://kfserving/sklearn"}}},
    }
    api = client.CustomObjectsApi(api_client_for(standin.url))
    api.create_namespaced_custom_object("serving.kserve.io", "v1beta1", namespace, "inferenceservices", body)


def writes(standin: KubernetesStandIn) -> list[str]:
    return [method for method, _ in standin.requests if method in ("POST", "PUT", "PATCH", "DELETE")]


def kubeconfig(standin: KubernetesStandIn, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "standin", "cluster": {"server": standin.url}}],
        "users": [{"name": "axle", "user": {"token": token}}],
        "contexts": [
            {"name": "elsewhere", "context": {"cluster": "nowhere", "user": "axle"}},
            {"name": "axle-staging", "context": {"cluster": "standin", "user": "axle", "namespace": NS}},
        ],
        "current-context": "elsewhere",
    }


# -- the contract ------------------------------------------------------------------------


def test_the_backend_implements_the_serving_backend_protocol(backend):
    assert isinstance(backend, ServingBackend)


def test_applying_creates_an_inference_service_that_matches_the_schema(backend, standin):
    status = backend.apply(digits())

    assert status.exists and not status.ready
    stored = standin.get("digits", NS)
    assert stored["spec"]["predictor"]["model"]["modelFormat"] == {"name": "mlflow"}
    assert stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "axle"
    assert ("POST", f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices?fieldValidation=Strict") in (
        standin.requests
    )


def test_applying_twice_leaves_one_inference_service_and_writes_nothing_the_second_time(backend, standin):
    backend.apply(digits())
    version = standin.get("digits", NS)["metadata"]["resourceVersion"]

    backend.apply(digits())

    assert list(standin.objects) == [(NS, "digits")]
    assert standin.get("digits", NS)["metadata"]["resourceVersion"] == version
    assert writes(standin) == ["POST", "POST"]  # the second create met AlreadyExists, no update followed


def test_a_canary_update_sets_canary_traffic_percent_and_a_new_generation(backend, standin):
    backend.apply(digits())
    standin.mark_ready("digits", NS)

    status = backend.apply(
        digits(model_version="4", model_uri="s3://axle-models/vision/digits/4/model", canary_percent=10)
    )

    stored = standin.get("digits", NS)
    assert stored["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert stored["spec"]["predictor"]["model"]["storageUri"].endswith("/digits/4/model")
    assert stored["metadata"]["annotations"]["axle.io/model-version"] == "4"
    assert stored["metadata"]["generation"] == 2
    # KServe has not looked at the new spec yet, so the old Ready=True does not count.
    assert status.exists and not status.ready
    assert "generation 2" in status.message


def test_promoting_a_canary_removes_canary_traffic_percent(backend, standin):
    backend.apply(digits())
    backend.apply(digits(canary_percent=10))

    backend.apply(digits())

    assert "canaryTrafficPercent" not in standin.get("digits", NS)["spec"]["predictor"]


def test_an_update_keeps_what_others_added_to_the_inference_service(backend, standin):
    backend.apply(digits())
    standin.add_finalizer("digits", NS)
    standin.touch("digits", NS, owner="platform-team")

    backend.apply(digits(canary_percent=20))

    metadata = standin.get("digits", NS)["metadata"]
    assert metadata["finalizers"] == ["inferenceservice.finalizers"]
    assert metadata["labels"]["owner"] == "platform-team"


def test_an_update_that_loses_a_race_is_retried_on_the_fresh_resource_version(backend, standin):
    backend.apply(digits())

    def another_writer(method: str, path: str) -> None:
        if method == "PUT" and writes(standin).count("PUT") == 1:
            standin.touch("digits", NS, owner="platform-team")

    standin.on_request = another_writer
    backend.apply(digits(canary_percent=30))

    stored = standin.get("digits", NS)
    assert writes(standin).count("PUT") == 2  # the first met a Conflict
    assert stored["spec"]["predictor"]["canaryTrafficPercent"] == 30
    assert stored["metadata"]["labels"]["owner"] == "platform-team"


def test_status_follows_the_ready_condition_and_the_url(backend, standin):
    backend.apply(digits())
    assert backend.status("digits", NS).ready is False

    standin.mark_not_ready("digits", NS, reason="RevisionMissing", message="Revision digits-predictor-00001 is pending")
    pending = backend.status("digits", NS)
    assert (pending.ready, pending.message) == (False, "Revision digits-predictor-00001 is pending")

    standin.mark_ready("digits", NS, url="http://digits.ml-staging.example.com")
    live = backend.status("digits", NS)
    assert (live.exists, live.ready, live.url) == (True, True, "http://digits.ml-staging.example.com")


def test_status_of_something_never_applied_says_it_does_not_exist(backend):
    assert backend.status("never-applied", NS).exists is False


def test_deleting_then_asking_for_status_says_it_does_not_exist(backend, standin):
    backend.apply(digits())

    backend.delete("digits", NS)

    assert backend.status("digits", NS).exists is False
    backend.delete("digits", NS)  # deleting again is not an error


def test_an_inference_service_held_by_a_finalizer_stays_until_kserve_lets_go(backend, standin):
    backend.apply(digits())
    standin.add_finalizer("digits", NS)

    backend.delete("digits", NS)

    assert backend.status("digits", NS).exists is True
    with pytest.raises(ServingError, match="still being deleted") as refused:
        backend.apply(digits())
    assert not refused.value.permanent


def test_list_names_returns_only_what_axle_manages(backend, standin):
    backend.apply(digits())
    backend.apply(digits(name="digits-canary"))
    backend.apply(digits(name="elsewhere", namespace="ml-production"))
    foreign_isvc(standin, "hand-made")
    foreign_isvc(standin, "impostor", labels={"app.kubernetes.io/managed-by": "helm"})

    assert backend.list_names(NS) == ["digits", "digits-canary"]
    assert backend.list_names("empty-namespace") == []


def test_list_names_follows_continue_tokens_across_pages(backend, standin):
    for index in range(5):
        backend.apply(digits(name=f"digits-{index}"))
    backend.page_size = 2

    assert backend.list_names(NS) == [f"digits-{index}" for index in range(5)]
    assert sum(1 for method, path in standin.requests if method == "GET" and "limit=2" in path) == 3


def test_it_refuses_to_take_over_or_delete_an_inference_service_it_does_not_manage(backend, standin):
    foreign_isvc(standin, "digits")

    with pytest.raises(ServingError, match="not managed by Axle") as take_over:
        backend.apply(digits())
    with pytest.raises(ServingError, match="not managed by Axle") as delete:
        backend.delete("digits", NS)

    assert take_over.value.permanent and delete.value.permanent
    assert standin.get("digits", NS)["spec"]["predictor"]["model"]["modelFormat"] == {"name": "sklearn"}


# -- what the API server refuses -----------------------------------------------------------


def test_a_resource_quantity_the_schema_rejects_is_a_permanent_error_with_the_servers_message(backend, standin):
    with pytest.raises(ServingError) as refused:
        backend.apply(digits(resources=Resources(cpu="two cores")))

    assert refused.value.permanent
    assert "HTTP 422" in refused.value.message
    assert 'InferenceService.serving.kserve.io "digits" is invalid' in refused.value.message
    assert 'spec.predictor.model.resources.requests.cpu: Invalid value: "two cores"' in refused.value.message
    assert standin.objects == {}


def test_a_field_the_crd_does_not_know_is_refused_rather_than_silently_dropped(backend, standin, monkeypatch):
    def with_a_typo(spec: DeploymentSpec) -> dict[str, Any]:
        manifest = inference_service(spec)
        manifest["spec"]["predictor"]["canaryTraficPercent"] = 10
        return manifest

    monkeypatch.setattr(backend_module, "inference_service", with_a_typo)

    with pytest.raises(ServingError) as refused:
        backend.apply(digits())

    assert refused.value.permanent
    assert 'unknown field "spec.predictor.canaryTraficPercent"' in refused.value.message
    assert standin.objects == {}


def test_a_wrong_type_forced_into_the_manifest_is_refused_with_422(backend, standin, monkeypatch):
    def with_text_percent(spec: DeploymentSpec) -> dict[str, Any]:
        manifest = inference_service(spec)
        manifest["spec"]["predictor"]["canaryTrafficPercent"] = "ten"
        return manifest

    monkeypatch.setattr(backend_module, "inference_service", with_text_percent)

    with pytest.raises(ServingError) as refused:
        backend.apply(digits())

    assert refused.value.permanent
    assert "(HTTP 422)" in refused.value.message
    assert "spec.predictor.canaryTrafficPercent in body must be of type integer" in refused.value.message


def test_a_namespace_that_does_not_exist_is_a_permanent_error(backend):
    with pytest.raises(ServingError, match='namespaces "ml-nowhere" not found') as refused:
        backend.apply(digits(namespace="ml-nowhere"))
    assert refused.value.permanent


def test_a_namespace_the_service_account_may_not_write_is_a_permanent_error(backend, standin):
    standin.forbidden_namespaces.add(NS)

    with pytest.raises(ServingError, match="cannot create resource") as refused:
        backend.apply(digits())
    assert refused.value.permanent
    assert "HTTP 403" in refused.value.message


def test_a_cluster_without_kserve_installed_is_a_permanent_error_for_every_call(backend, standin):
    standin.crd_installed = False

    for call in (lambda: backend.apply(digits()), lambda: backend.status("digits", NS), lambda: backend.list_names(NS)):
        with pytest.raises(ServingError, match="could not find the requested resource") as refused:
            call()
        assert refused.value.permanent


def test_an_overloaded_api_server_is_a_transient_error(backend, standin):
    standin.fail_next(503)

    with pytest.raises(ServingError, match="HTTP 503") as refused:
        backend.status("digits", NS)
    assert not refused.value.permanent


def test_an_api_server_that_is_down_is_a_transient_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again on exit: nothing listens there
    down = KServeBackend(api_client_for(f"http://127.0.0.1:{port}"), request_timeout=2)

    for call in (lambda: down.apply(digits()), lambda: down.status("digits", NS), lambda: down.list_names(NS)):
        with pytest.raises(ServingError, match="Kubernetes API is unreachable") as refused:
            call()
        assert not refused.value.permanent


# -- kubeconfig and credentials ---------------------------------------------------------


@pytest.fixture
def guarded(crd) -> KubernetesStandIn:
    with KubernetesStandIn(crd, token=TOKEN, namespaces=(NS,)) as api:
        yield api


def test_a_backend_built_from_a_kubeconfig_file_and_context_reaches_the_cluster(guarded, tmp_path: Path):
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig(guarded, TOKEN)))

    backend = KServeBackend(kubeconfig=path, context="axle-staging")
    backend.apply(digits())

    assert backend.list_names(NS) == ["digits"]


def test_a_backend_built_from_kubeconfig_text_reaches_the_cluster(guarded):
    backend = KServeBackend.from_kubeconfig_text(yaml.safe_dump(kubeconfig(guarded, TOKEN)), context="axle-staging")
    backend.apply(digits())

    assert guarded.get("digits", NS) is not None


def test_a_kubeconfig_without_the_named_context_is_a_permanent_error(guarded):
    with pytest.raises(ServingError, match="kubeconfig cannot be used") as refused:
        KServeBackend.from_kubeconfig_text(yaml.safe_dump(kubeconfig(guarded, TOKEN)), context="ml-nowhere")
    assert refused.value.permanent


def test_a_rejected_token_is_permanent_and_never_appears_in_errors_logs_or_repr(guarded, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "axle-wrong-token-0b1c2d3e4f"
    backend = KServeBackend.from_kubeconfig_text(yaml.safe_dump(kubeconfig(guarded, wrong)), context="axle-staging")

    with pytest.raises(ServingError, match="HTTP 401") as refused:
        backend.apply(digits())

    assert refused.value.permanent
    for text in (str(refused.value), repr(refused.value), caplog.text, repr(backend)):
        assert wrong not in text


# -- predictions -------------------------------------------------------------------------


def test_predict_forwards_an_open_inference_protocol_request_to_the_model(backend, standin):
    backend.apply(digits())
    standin.mark_ready("digits", NS, url=standin.url)

    answer = backend.predict("digits", NS, ROWS)

    assert answer["model_name"] == "digits"
    assert answer["outputs"][0]["data"] == [6, 15]
    assert ("POST", "/v2/models/digits/infer") in standin.requests


def test_predict_through_an_ingress_sends_the_services_host_name(standin):
    backend = KServeBackend(api_client_for(standin.url), ingress_url=standin.url, predict_timeout=5)
    backend.apply(digits())
    backend.apply(digits(name="digits", namespace="ml-production"))
    standin.mark_ready("digits", NS, url="http://digits.ml-staging.example.com")
    standin.mark_ready("digits", "ml-production", url="http://digits.ml-production.example.com")
    seen: list[str] = []

    def model(name: str, payload: dict) -> tuple[int, dict]:
        seen.append(name)
        return 200, {"model_name": name, "outputs": []}

    standin.model_handler = model

    assert backend.predict("digits", NS, ROWS) == {"model_name": "digits", "outputs": []}
    assert seen == ["digits"]


def test_predict_before_the_service_has_a_url_is_a_transient_error(backend):
    backend.apply(digits())

    with pytest.raises(ServingError, match="has no URL yet") as refused:
        backend.predict("digits", NS, ROWS)
    assert not refused.value.permanent


def test_predict_on_a_service_that_does_not_exist_is_a_permanent_error(backend):
    with pytest.raises(ServingError, match="does not exist") as refused:
        backend.predict("digits", NS, ROWS)
    assert refused.value.permanent


def test_a_request_the_model_server_rejects_is_a_permanent_error_with_its_message(backend, standin):
    backend.apply(digits())
    standin.mark_ready("digits", NS, url=standin.url)

    with pytest.raises(ServingError, match="HTTP 422.*'inputs' list") as refused:
        backend.predict("digits", NS, {"instances": [[1, 2, 3]]})
    assert refused.value.permanent


def test_a_model_server_that_fails_is_a_transient_error(backend, standin):
    backend.apply(digits())
    standin.mark_ready("digits", NS, url=standin.url)
    standin.model_handler = lambda name, payload: (503, {"error": "model is loading"})

    with pytest.raises(ServingError, match="model is loading") as refused:
        backend.predict("digits", NS, ROWS)
    assert not refused.value.permanent


def test_a_model_server_slower_than_the_timeout_is_a_transient_error(standin):
    backend = KServeBackend(api_client_for(standin.url), predict_timeout=0.3)
    backend.apply(digits())
    standin.mark_ready("digits", NS, url=standin.url)

    def slow(name: str, payload: dict) -> tuple[int, dict]:
        time.sleep(1)
        return 200, {}

    standin.model_handler = slow
    started = time.monotonic()

    with pytest.raises(ServingError, match="did not answer within 0.3s") as refused:
        backend.predict("digits", NS, ROWS)
    assert not refused.value.permanent
    assert time.monotonic() - started < 1


# -- deployment identity ------------------------------------------------------------------


def test_it_refuses_to_replace_an_inference_service_of_another_owner(backend, standin):
    backend.apply(digits(owner="production/vision-digits"))
    before = standin.get("digits", NS)

    with pytest.raises(ServingError, match="another deployment") as caught:
        backend.apply(digits(owner="staging/audio-digits", model_version="9", model_uri="s3://audio/9"))

    assert caught.value.permanent
    after = standin.get("digits", NS)
    assert after["spec"] == before["spec"]
    assert after["metadata"]["annotations"]["axle.io/owner"] == "production/vision-digits"


def test_the_same_owner_may_roll_a_new_version_onto_its_inference_service(backend, standin):
    backend.apply(digits(owner="production/vision-digits"))

    backend.apply(digits(owner="production/vision-digits", model_version="4", model_uri="s3://axle-models/4"))

    assert standin.get("digits", NS)["spec"]["predictor"]["model"]["storageUri"] == "s3://axle-models/4"
