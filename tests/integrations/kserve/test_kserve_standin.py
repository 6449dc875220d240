"""The stand-in behaves like the Kubernetes API server where the backend relies on it,
driven through the plain `kubernetes` client, not through the backend."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.integrations.kserve.conftest import api_client_for
from tests.integrations.kserve.standin import KubernetesStandIn

GROUP, VERSION, PLURAL, NS = "serving.kserve.io", "v1beta1", "inferenceservices", "default"


def isvc(name: str = "iris", **predictor: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "axle"}},
        "spec": {
            "predictor": {
                "model": {"modelFormat": {"name": "mlflow"}, "storageUri": "s3://models/iris"},
                **predictor,
            }
        },
    }


@pytest.fixture
def api(standin: KubernetesStandIn) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client_for(standin.url))


def status_of(error: ApiException) -> dict[str, Any]:
    return json.loads(error.body)


def test_it_serves_kserves_crd(standin):
    crd = client.ApiextensionsV1Api(api_client_for(standin.url)).read_custom_resource_definition(
        "inferenceservices.serving.kserve.io"
    )
    assert crd.spec.names.kind == "InferenceService"
    assert [v.name for v in crd.spec.versions] == ["v1beta1"]
    assert crd.spec.versions[0].var_schema.open_apiv3_schema.properties["spec"].required == ["predictor"]


def test_create_assigns_uid_generation_and_resource_version_and_ignores_status(api):
    body = isvc()
    body["status"] = {"url": "http://forged.example.com"}

    created = api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)

    assert created["metadata"]["generation"] == 1
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    assert "status" not in created


def test_a_second_create_of_the_same_name_is_already_exists(api):
    api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, isvc())

    with pytest.raises(ApiException) as refused:
        api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, isvc())

    assert refused.value.status == 409
    assert status_of(refused.value)["reason"] == "AlreadyExists"


def test_a_missing_required_field_is_invalid_with_the_field_named(api):
    body = isvc()
    del body["spec"]["predictor"]["model"]["modelFormat"]["name"]

    with pytest.raises(ApiException) as refused:
        api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)

    status = status_of(refused.value)
    assert (refused.value.status, status["reason"]) == (422, "Invalid")
    assert status["details"]["causes"] == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.predictor.model.modelFormat.name"}
    ]


def test_a_name_that_is_not_a_dns_subdomain_is_invalid(api):
    with pytest.raises(ApiException) as refused:
        api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, isvc(name="Iris_Model"))

    assert refused.value.status == 422
    assert "metadata.name" in status_of(refused.value)["message"]


def test_an_unknown_field_is_pruned_with_a_warning_unless_validation_is_strict(api):
    created, _, headers = api.create_namespaced_custom_object_with_http_info(
        GROUP, VERSION, NS, PLURAL, isvc(replicaz=3)
    )
    assert "replicaz" not in created["spec"]["predictor"]
    assert 'unknown field \\"spec.predictor.replicaz\\"' in headers["Warning"]

    with pytest.raises(ApiException) as refused:
        api.create_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, isvc("strict", replicaz=3), field_validation="Strict"
        )
    assert refused.value.status == 400
    assert 'unknown field "spec.predictor.replicaz"' in status_of(refused.value)["message"]


def test_a_replace_needs_the_current_resource_version(api):
    created = api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, isvc())

    without = isvc(canaryTrafficPercent=10)
    with pytest.raises(ApiException) as missing:
        api.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "iris", without)
    assert missing.value.status == 422

    current = isvc(canaryTrafficPercent=10)
    current["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    replaced = api.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "iris", current)
    assert replaced["metadata"]["generation"] == 2

    with pytest.raises(ApiException) as stale:
        api.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "iris", current)
    assert (stale.value.status, status_of(stale.value)["reason"]) == (409, "Conflict")


def test_a_merge_patch_changes_only_what_it_names_and_null_removes(api):
    api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, isvc(canaryTrafficPercent=10))

    patched = api.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "iris", {"spec": {"predictor": {"canaryTrafficPercent": None, "minReplicas": 2}}}
    )

    assert patched["spec"]["predictor"]["minReplicas"] == 2
    assert "canaryTrafficPercent" not in patched["spec"]["predictor"]
    assert patched["spec"]["predictor"]["model"]["storageUri"] == "s3://models/iris"


def test_a_patch_that_breaks_the_schema_is_invalid(api):
    api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, isvc())

    with pytest.raises(ApiException) as refused:
        api.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "iris", {"spec": {"predictor": {"minReplicas": "2"}}}
        )

    assert refused.value.status == 422
    assert "spec.predictor.minReplicas in body must be of type integer" in status_of(refused.value)["message"]


def test_delete_with_a_stale_uid_precondition_is_a_conflict(api):
    api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, isvc())

    with pytest.raises(ApiException) as refused:
        api.delete_namespaced_custom_object(
            GROUP,
            VERSION,
            NS,
            PLURAL,
            "iris",
            body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="x")),
        )

    assert refused.value.status == 409
    with pytest.raises(ApiException) as gone:
        api.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "never-made")
    assert gone.value.status == 404


def test_label_selectors_filter_lists(api):
    api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, isvc("ours"))
    theirs = isvc("theirs")
    theirs["metadata"]["labels"] = {"team": "recsys"}
    api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, theirs)

    def names(selector: str) -> list[str]:
        listing = api.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, label_selector=selector)
        return [item["metadata"]["name"] for item in listing["items"]]

    assert names("app.kubernetes.io/managed-by=axle") == ["ours"]
    assert names("app.kubernetes.io/managed-by!=axle") == ["theirs"]
    assert names("team in (recsys,vision)") == ["theirs"]
    assert names("!team") == ["ours"]
    assert names("") == ["ours", "theirs"]


def test_marking_ready_writes_a_status_that_fits_the_schema(api, standin):
    api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, isvc())

    standin.mark_ready("iris", NS)

    status = api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "iris")["status"]
    assert status["url"] == "http://iris.default.example.com"
    assert {"type": "Ready", "status": "True"}.items() <= status["conditions"][-1].items()
    assert status["observedGeneration"] == 1
