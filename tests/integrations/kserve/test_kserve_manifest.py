"""Every InferenceService Axle generates fits KServe's published CRD schema, checked with
jsonschema directly (no stand-in involved), and asks for what the MLServer runtime serves."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import jsonschema
import pytest

from apps.integrations.kserve.manifest import (
    ANNOTATION_ARTIFACT_SHA256,
    ANNOTATION_MODEL_NAME,
    ANNOTATION_MODEL_VERSION,
    MANAGED_BY_LABEL,
    inference_service,
)
from apps.integrations.serving.base import DeploymentSpec, Resources, ServingError

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def digits(**changes: Any) -> DeploymentSpec:
    spec = DeploymentSpec(
        name="digits-production",
        namespace="ml-production",
        model_name="digits classifier",
        model_version="7",
        model_uri="s3://axle-models/vision/digits/7/model",
        artifact_sha256=SHA,
    )
    return dataclasses.replace(spec, **changes)


def closed(schema: Any) -> Any:
    """The schema with every object that lists its properties closed to others: the API
    server would prune an unknown field silently, so a test must catch one explicitly."""
    schema = copy.deepcopy(schema)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                if not node.get("x-kubernetes-preserve-unknown-fields"):
                    node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is not the CRD's to describe
    return schema


@pytest.fixture(scope="module")
def validator(isvc_schema: dict[str, Any]) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(closed(isvc_schema))


SPECS = {
    "plain": digits(),
    "canary": digits(canary_percent=10),
    "canary of nothing": digits(canary_percent=0),
    "canary of everything": digits(canary_percent=100),
    "gpus": digits(resources=Resources(cpu="4", memory="16Gi", gpus=2)),
    "fractional cpu": digits(resources=Resources(cpu="500m", memory="512Mi")),
    "longest name": digits(name="d" + "-x" * 21 + "yz", namespace="ml"),
    "longest namespace for a 12-character name": digits(name="d-0123456789", namespace="n" * 40),
    "long model name": digits(model_name="A model name with spaces, ünïcode and " + "x" * 300, model_version="12"),
    "extra labels": digits(labels={"axle.io/team": "vision", "environment": "production"}),
    "pvc storage": digits(model_uri="pvc://models-claim/digits/7"),
}


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_every_generated_manifest_validates_against_the_crd_schema(spec, validator):
    manifest = inference_service(spec)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]
    assert errors == []


def test_the_longest_name_is_45_characters_and_its_host_label_fits():
    longest, crowded = SPECS["longest name"], SPECS["longest namespace for a 12-character name"]
    assert len(longest.name) == 45
    assert len(f"{crowded.name}-predictor-{crowded.namespace}") == 63


def test_the_schema_check_catches_a_misspelt_field_and_a_wrong_type(validator):
    # The check above has teeth: these are what a manifest bug would look like.
    manifest = inference_service(digits())
    manifest["spec"]["predictor"]["model"]["storageURI"] = manifest["spec"]["predictor"]["model"].pop("storageUri")
    manifest["spec"]["predictor"]["canaryTrafficPercent"] = "10"
    problems = {(tuple(e.absolute_path), e.validator) for e in validator.iter_errors(manifest)}
    assert problems == {
        (("spec", "predictor", "model"), "additionalProperties"),
        (("spec", "predictor", "canaryTrafficPercent"), "type"),
    }


def test_the_manifest_asks_for_an_mlflow_model_over_the_open_inference_protocol():
    manifest = inference_service(digits())
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1"
    assert manifest["kind"] == "InferenceService"
    assert manifest["spec"]["predictor"]["model"] == {
        "modelFormat": {"name": "mlflow"},
        "protocolVersion": "v2",
        "storageUri": "s3://axle-models/vision/digits/7/model",
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    }
    assert "canaryTrafficPercent" not in manifest["spec"]["predictor"]


def test_the_mlserver_runtime_serves_what_the_manifest_asks_for(mlserver_runtime):
    model = inference_service(digits())["spec"]["predictor"]["model"]
    runtime = mlserver_runtime["spec"]
    assert model["protocolVersion"] in runtime["protocolVersions"]
    formats = [f for f in runtime["supportedModelFormats"] if f["name"] == model["modelFormat"]["name"]]
    # autoSelect lets KServe pick this runtime without the manifest naming it.
    assert formats and all(f["autoSelect"] for f in formats)
    # Unversioned on purpose: a pinned version must be one the runtime lists to match.
    assert "version" not in model["modelFormat"]


def test_metadata_carries_the_name_labels_and_the_approved_artifact():
    manifest = inference_service(digits(labels={"environment": "production"}))
    metadata = manifest["metadata"]
    assert metadata["name"] == "digits-production"
    assert metadata["namespace"] == "ml-production"
    assert metadata["labels"] == {"environment": "production", MANAGED_BY_LABEL: "axle"}
    assert metadata["annotations"] == {
        ANNOTATION_MODEL_NAME: "digits classifier",
        ANNOTATION_MODEL_VERSION: "7",
        ANNOTATION_ARTIFACT_SHA256: SHA,
    }


def test_a_caller_label_cannot_drop_the_managed_by_label():
    manifest = inference_service(digits(labels={MANAGED_BY_LABEL: "someone-else"}))
    assert manifest["metadata"]["labels"][MANAGED_BY_LABEL] == "axle"


def test_a_canary_sets_canary_traffic_percent_on_the_predictor():
    assert inference_service(digits(canary_percent=25))["spec"]["predictor"]["canaryTrafficPercent"] == 25


def test_gpus_are_requested_and_limited_as_nvidia_gpus():
    resources = inference_service(digits(resources=Resources(cpu="4", memory="16Gi", gpus=2)))["spec"]["predictor"][
        "model"
    ]["resources"]
    assert resources["requests"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"}
    assert resources["limits"] == resources["requests"]


REFUSED = {
    "a name 64 characters long": (digits(name="d" * 64), "not a valid InferenceService name"),
    "a name 46 characters long": (digits(name="d" * 46, namespace="ml"), "at most 45 characters"),
    "a name whose host label would pass 63": (digits(name="d" * 40), "at most 39 characters"),
    "a name starting with a digit": (digits(name="7digits"), "not a valid InferenceService name"),
    "a name with a dot": (digits(name="digits.v7"), "not a valid InferenceService name"),
    "an upper-case namespace": (digits(namespace="ML"), "not a valid Kubernetes namespace"),
    "a canary above 100": (digits(canary_percent=150), "from 0 to 100"),
    "a negative canary": (digits(canary_percent=-1), "from 0 to 100"),
    "an MLflow registry URI": (digits(model_uri="models:/digits/7"), "it is an MLflow URI"),
    "an MLflow run URI": (digits(model_uri="runs:/abc/model"), "it is an MLflow URI"),
    "a URI without a scheme": (digits(model_uri="axle-models/digits"), "has no scheme"),
    "negative GPUs": (digits(resources=Resources(gpus=-1)), "cannot be negative"),
    "a label value with a space": (digits(labels={"team": "computer vision"}), "must be at most 63"),
    "a label key with two slashes": (digits(labels={"a/b/c": "x"}), "prefix must be a DNS subdomain"),
}


@pytest.mark.parametrize(("spec", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_it_refuses_what_kserve_would_refuse_with_a_permanent_error(spec, message):
    with pytest.raises(ServingError) as refused:
        inference_service(spec)
    assert refused.value.permanent
    assert message in refused.value.message
