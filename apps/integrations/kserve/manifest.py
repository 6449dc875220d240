"""Build the KServe InferenceService that serves a `DeploymentSpec`. Pure: no I/O.

The predictor asks for the `mlflow` model format over the Open Inference Protocol (v2), which
is what KServe's MLServer ClusterServingRuntime (`kserve-mlserver`) declares it serves, so
KServe selects that runtime by itself; no runtime is named here, so a cluster that installs
its own mlflow-capable runtime with a higher priority gets that one instead.

Inputs that KServe or the API server would refuse anyway (a name KServe's admission webhook
rejects, a canary share outside 0..100, an MLflow-only URI the storage initializer cannot
fetch, malformed labels) are refused here with a permanent `ServingError`, so the user sees
one clear message instead of a failed rollout later."""

from __future__ import annotations

import re
from typing import Any

from apps.integrations.serving.base import DeploymentSpec, ServingError

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "axle"
MANAGED_BY_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"

ANNOTATION_MODEL_NAME = "axle.io/model-name"
ANNOTATION_MODEL_VERSION = "axle.io/model-version"
ANNOTATION_ARTIFACT_SHA256 = "axle.io/artifact-sha256"
ANNOTATION_OWNER = "axle.io/owner"

MODEL_FORMAT = "mlflow"
PROTOCOL_VERSION = "v2"
GPU_RESOURCE = "nvidia.com/gpu"
# KServe validates only the name's pattern, but builds names from it that must fit a 63-character
# DNS label: <name>-predictor, its revisions <name>-predictor-00001, and the host label
# <name>-predictor-<namespace> (Knative's default domain template). Hence at most 45, less in a
# long namespace.
MAX_NAME = 45
PREDICTOR_HOST_SUFFIX = "-predictor-"


def max_name_length(namespace: str) -> int:
    """The longest InferenceService name whose derived names fit 63 characters in `namespace`."""
    return min(MAX_NAME, 63 - len(PREDICTOR_HOST_SUFFIX) - len(namespace))


# KServe's validating webhook (IsvcNameFmt): a DNS-1035 label, stricter than the API
# server's DNS-1123 subdomain, because the name becomes part of Service and host names.
_ISVC_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_RULE = "at most 63 characters of [-_.A-Za-z0-9], alphanumeric at both ends"
_URI_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
# MLflow resolves these through its tracking server; KServe's storage initializer cannot,
# so the serving app must hand over the artifact's real storage location instead.
_MLFLOW_ONLY_SCHEMES = ("models:", "runs:", "mlflow-artifacts:")


def inference_service(spec: DeploymentSpec) -> dict[str, Any]:
    """The InferenceService manifest for `spec`, ready for the Kubernetes API."""
    _check(spec)
    resources = _resources(spec)
    predictor: dict[str, Any] = {
        "model": {
            # No modelFormat.version: the runtime lists mlflow "1" and "2", and KServe
            # matches an unversioned format against any of them, whereas pinning the
            # version of the MLflow that saved the model (3.x today) would match nothing.
            "modelFormat": {"name": MODEL_FORMAT},
            "protocolVersion": PROTOCOL_VERSION,
            "storageUri": spec.model_uri,
            "resources": resources,
        }
    }
    if spec.canary_percent is not None:
        predictor["canaryTrafficPercent"] = spec.canary_percent
    labels = {**spec.labels, MANAGED_BY_LABEL: MANAGED_BY_VALUE}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": {
                # Model names are free text, so they live in annotations, which take any
                # string, rather than in labels, which take 63 characters of [-_.A-Za-z0-9].
                ANNOTATION_MODEL_NAME: spec.model_name,
                ANNOTATION_MODEL_VERSION: str(spec.model_version),
                ANNOTATION_ARTIFACT_SHA256: spec.artifact_sha256,
                # Whom the service belongs to: the backend refuses to replace another's.
                **({ANNOTATION_OWNER: spec.owner} if spec.owner else {}),
            },
        },
        "spec": {"predictor": predictor},
    }


def _resources(spec: DeploymentSpec) -> dict[str, dict[str, str]]:
    amounts = {"cpu": spec.resources.cpu, "memory": spec.resources.memory}
    if spec.resources.gpus:
        amounts[GPU_RESOURCE] = str(spec.resources.gpus)
    # Requests equal to limits: Kubernetes insists on it for extended resources such as
    # GPUs, and it gives the model server the Guaranteed QoS class, so a busy node does not
    # evict it first.
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _check(spec: DeploymentSpec) -> None:
    if len(spec.namespace) > 63 or not _NAMESPACE.fullmatch(spec.namespace):
        raise ServingError(f"Namespace {spec.namespace!r} is not a valid Kubernetes namespace.", permanent=True)
    if max_name_length(spec.namespace) < 2:
        raise ServingError(
            f"Namespace {spec.namespace!r} is too long for KServe: <name>-predictor-<namespace> must fit "
            "63 characters.",
            permanent=True,
        )
    if len(spec.name) > max_name_length(spec.namespace) or not _ISVC_NAME.fullmatch(spec.name):
        raise ServingError(
            f"Deployment name {spec.name!r} is not a valid InferenceService name in {spec.namespace!r}: at most "
            f"{max_name_length(spec.namespace)} characters (so that <name>-predictor-<namespace> fits 63), "
            "lower-case letters, digits and '-', starting with a letter and not ending with '-'.",
            permanent=True,
        )
    if spec.canary_percent is not None and (
        isinstance(spec.canary_percent, bool)
        or not isinstance(spec.canary_percent, int)
        or not 0 <= spec.canary_percent <= 100
    ):
        raise ServingError(
            f"Canary traffic must be a whole percentage from 0 to 100, not {spec.canary_percent!r}.",
            permanent=True,
        )
    if spec.resources.gpus < 0:
        raise ServingError(f"GPU count cannot be negative ({spec.resources.gpus}).", permanent=True)
    uri = spec.model_uri.strip()
    if uri.lower().startswith(_MLFLOW_ONLY_SCHEMES):
        raise ServingError(
            f"KServe cannot fetch {uri!r}: it is an MLflow URI. Deploy from the artifact's storage "
            "URI (s3://, gs://, pvc://, https://…) instead.",
            permanent=True,
        )
    if not _URI_SCHEME.match(uri):
        raise ServingError(f"Model storage URI {uri!r} has no scheme (s3://, gs://, pvc://…).", permanent=True)
    for key, value in spec.labels.items():
        problem = label_problem(key, value)
        if problem:
            raise ServingError(problem, permanent=True)


def label_problem(key: str, value: str) -> str:
    """Why the API server would refuse this label, or "" if it would not."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return f"Label key {key!r}: the prefix must be a DNS subdomain."
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return f"Label key {key!r}: the name must be {_LABEL_RULE}."
    if not isinstance(value, str) or len(value) > 63 or (value and not _LABEL_NAME.fullmatch(value)):
        return f"Label {key!r}: the value {value!r} must be {_LABEL_RULE}."
    return ""
