"""What a deployment asks a backend for: the server's name, its owner and the spec.

Names are collision-free: a readable prefix (model and environment) cut so that a short hash
of the owner fits, within Kubernetes' 63-character DNS-1035 labels. An InferenceService's name
is shorter still, because KServe and Knative build other names from it that must fit the same
63 characters: the predictor `<name>-predictor`, its revisions `<name>-predictor-00001`, and
the host label `<name>-predictor-<namespace>` (Knative's default domain template). KServe's
own validation checks only the pattern, so the cap is ours (kserve/manifest.py): at most 45,
lower when the namespace is long. A local server belongs to
its deployment; an InferenceService belongs to its environment and model, because successive
versions and canaries of a model are revisions of one InferenceService. The backend refuses
to replace a server recorded with another owner."""

import hashlib
import re

from apps.integrations.kserve import manifest
from apps.integrations.serving.base import DeploymentSpec, Resources

from .models import Deployment, Environment

HASH_CHARS = 10
MAX_NAME = 63
KSERVE_MAX_NAME = manifest.MAX_NAME


def kserve_max_name(namespace: str) -> int:
    """The longest InferenceService name whose derived names and host label fit 63 characters
    in `namespace` (never so short that a letter and the owner's hash do not fit: a namespace
    that long is refused by the KServe backend instead)."""
    return max(manifest.max_name_length(namespace), HASH_CHARS + 2)


def backend_name(*, model_name: str, environment_name: str, owner: str, max_length: int = MAX_NAME) -> str:
    digest = hashlib.sha256(owner.encode()).hexdigest()[:HASH_CHARS]
    prefix = re.sub(r"[^a-z0-9]+", "-", f"{model_name}-{environment_name}".lower()).strip("-")
    if not prefix[:1].isalpha():
        prefix = f"m-{prefix}".rstrip("-")  # DNS-1035 (and so KServe) names start with a letter
    prefix = prefix[: max_length - 1 - HASH_CHARS].rstrip("-")
    return f"{prefix}-{digest}"


def owner_of(deployment: Deployment) -> str:
    if deployment.environment.backend == Environment.Backend.KSERVE:
        return f"{deployment.environment.uuid}/{deployment.model_version.model.uuid}"
    return str(deployment.uuid)


def name_of(deployment: Deployment) -> str:
    environment = deployment.environment
    kserve = environment.backend == Environment.Backend.KSERVE
    return backend_name(
        model_name=deployment.model_version.model.name,
        environment_name=environment.name,
        owner=owner_of(deployment),
        max_length=kserve_max_name(environment.namespace) if kserve else MAX_NAME,
    )


def spec_of(deployment: Deployment, model_path: str = "") -> DeploymentSpec:
    version = deployment.model_version
    local = deployment.environment.backend == Environment.Backend.LOCAL
    return DeploymentSpec(
        name=deployment.backend_name,
        namespace=deployment.environment.namespace,
        model_name=version.model.name,
        model_version=str(version.number),
        # The local server gets a checked copy from the hub (model_path); KServe fetches the
        # stored artifact itself.
        model_uri=f"models:/{version.model.name}/{version.number}" if local else version.artifact_uri,
        artifact_sha256=deployment.artifact_sha256,
        resources=Resources(**(deployment.resources or {})),
        canary_percent=deployment.canary_percent,
        labels={"axle.deployment": str(deployment.uuid)[:63]},
        owner=owner_of(deployment),
        model_path=model_path,
    )
