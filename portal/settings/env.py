"""Reading configuration from the environment.

Django's own settings come from ``DJANGO_*`` variables, Axle's from ``AXLE_*``. Any secret
may instead be given as ``<NAME>_FILE`` pointing at a file that holds it (Docker/Kubernetes
secrets). Bad configuration stops the process at start with a sentence saying what to fix.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

env = environ.Env()


def secret(name: str, default: str | None = None) -> str | None:
    """Return the secret ``name`` from the environment or from the file named by ``name_FILE``."""
    path = env.str(f"{name}_FILE", default="")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(
                f"{name}_FILE points at {path!r}, which cannot be read: {exc.strerror}."
            ) from exc
    return env.str(name, default=default)
