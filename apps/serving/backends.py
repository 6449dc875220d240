"""The serving backend of an environment. Built per call: cheap, and never shared across
threads or processes."""

from pathlib import Path

from django.conf import settings

from apps.core import crypto
from apps.integrations.serving.base import ServingBackend, ServingError

from .models import Environment


def local_backend():
    from apps.integrations.local_serving.backend import LocalBackend

    return LocalBackend(
        Path(settings.AXLE_SERVING_DIR),
        settings.AXLE_MODEL_SERVER_PYTHON,
        server_root=Path(settings.AXLE_MODEL_SERVER_DIR),
        server_user=settings.AXLE_MODEL_SERVER_USER,
        server_group=settings.AXLE_MODEL_SERVER_GROUP,
        pool_size=settings.AXLE_MODEL_SERVER_POOL,
    )


def backend_for(environment: Environment) -> ServingBackend:
    if environment.backend == Environment.Backend.KSERVE:
        from apps.integrations.kserve.backend import KServeBackend

        if not environment.kubeconfig_encrypted:
            raise ServingError(f"Environment {environment.name} has no kubeconfig yet.", permanent=True)
        try:
            config = crypto.decrypt(environment.kubeconfig_encrypted)
        except crypto.SecretUnreadable as exc:
            raise ServingError(f"Environment {environment.name}: {exc}", permanent=True) from None
        return KServeBackend.from_kubeconfig_text(config)
    return local_backend()
