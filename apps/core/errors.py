"""Errors a person can act on. The API turns them into 400/403/404/409 with the message; the
dashboard shows the message inline."""


class ApplicationError(Exception):
    status_code = 400

    def __init__(self, message: str, *, extra: dict | None = None):
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class ValidationFailed(ApplicationError):
    status_code = 400


class PermissionDenied(ApplicationError):
    status_code = 403


class NotFound(ApplicationError):
    status_code = 404


class Conflict(ApplicationError):
    """The thing changed under you (a lost race, an illegal transition)."""

    status_code = 409


class Unavailable(ApplicationError):
    """Something outside the hub (a cluster, MLflow) cannot be reached right now."""

    status_code = 503
