"""What a deployment asks a backend for: the server's name, its owner and the spec.

Names are collision-free: a readable prefix (model and environment) cut so that a short hash
of the owner fits, within Kubernetes' 63-character DNS-1035 labels. A local server belongs to
its deployment; an InferenceService belongs to its environment and model, because successive
versions and canaries of a model are revisions of one InferenceService. The backend refuses
to replace a server recorded with another owner."""

import hashlib
import re

from apps.integrations.serving.base import DeploymentSpec, Resources

from .models import Deployment, Environment

HASH_CHARS = 10
MAX_NAME = 63


def backend_name(*, model_name: str, environment_name: str, owner: str) -> str:
    digest = hashlib.sha256(owner.encode()).hexdigest()[:HASH_CHARS]
    prefix = re.sub(r"[^a-z0-9]+", "-", f"{model_name}-{environment_name}".lower()).strip("-")
    if not prefix[:1].isalpha():
        prefix = f"m-{prefix}".rstrip("-")  # DNS-1035 (and so KServe) names start with a letter
    prefix = prefix[: MAX_NAME - 1 - HASH_CHARS].rstrip("-")
    return f"{prefix}-{digest}"


def owner_of(deployment: Deployment) -> str:
    if deployment.environment.backend == Environment.Backend.KSERVE:
        return f"{deployment.environment.uuid}/{deployment.model_version.model.uuid}"
    return str(deployment.uuid)


def name_of(deployment: Deployment) -> str:
    return backend_name(
        model_name=deployment.model_version.model.name,
        environment_name=deployment.environment.name,
        owner=owner_of(deployment),
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
