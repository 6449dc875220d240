"""The Axle command line and Python client. It speaks the portal's REST API only.

from axle_client import Client
axle = Client.from_config()          # or Client("http://127.0.0.1:8000", token="…")
job = axle.job_submit(cluster="local-ssh", script=open("job.sh").read(), parameters={"LR": "0.1"})
job = axle.job_wait(job["id"])
"""

from .client import Client
from .errors import (
    AuthError,
    AxleError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RefusedError,
    UnavailableError,
)

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "AxleError",
    "Client",
    "ConflictError",
    "ForbiddenError",
    "NotFoundError",
    "RefusedError",
    "UnavailableError",
    "__version__",
]
