"""Fixtures for the KServe backend: KServe's published CRD and MLServer runtime, and a
Kubernetes API stand-in that validates against that CRD (Kubernetes cannot run here)."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from apps.integrations.kserve.backend import KServeBackend
from tests.integrations.kserve.standin import KubernetesStandIn

CRD_FILE = "serving.kserve.io_inferenceservices.yaml"
RUNTIME_FILE = "kserve-mlserver-runtime.yaml"
VENDORED = Path(__file__).parent / "data"
# CI runs with a copy of the team's shared/ folder beside the clone.
SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "kserve"


def locate(filename: str, env_var: str | None = None) -> Path | None:
    """An explicit AXLE_KSERVE_CRD wins (to try a newer KServe's CRD); then the copy
    vendored beside these tests; then ../shared/kserve."""
    if env_var and os.environ.get(env_var):
        path = Path(os.environ[env_var])
        if not path.is_file():
            pytest.fail(f"{env_var}={path} does not name a file")
        return path
    for folder in (VENDORED, SHARED):
        if (folder / filename).is_file():
            return folder / filename
    return None


@functools.cache
def _load(path: Path) -> Any:
    # The CRD is 2 MB of YAML; the C loader reads it in a fraction of the pure-Python time.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open() as f:
        return yaml.load(f, Loader=loader)


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    path = locate(CRD_FILE, "AXLE_KSERVE_CRD")
    if path is None:
        pytest.skip(f"KServe's CRD {CRD_FILE} is in neither {VENDORED} nor {SHARED}; set AXLE_KSERVE_CRD")
    return _load(path)


@pytest.fixture(scope="session")
def isvc_schema(crd: dict[str, Any]) -> dict[str, Any]:
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    return version["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="session")
def mlserver_runtime() -> dict[str, Any]:
    path = locate(RUNTIME_FILE)
    if path is None:
        pytest.skip(f"KServe's {RUNTIME_FILE} is in neither {VENDORED} nor {SHARED}")
    return _load(path)


@pytest.fixture
def standin(crd: dict[str, Any]) -> Iterator[KubernetesStandIn]:
    with KubernetesStandIn(crd, namespaces=("default", "ml-staging", "ml-production")) as api:
        yield api


def api_client_for(url: str, token: str | None = None) -> client.ApiClient:
    configuration = client.Configuration(host=url)
    if token:
        configuration.api_key = {"BearerToken": token}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
    return client.ApiClient(configuration)


@pytest.fixture
def backend(standin: KubernetesStandIn) -> KServeBackend:
    return KServeBackend(api_client_for(standin.url), request_timeout=5, predict_timeout=5)
