"""What can go wrong, each with the exit code the command line gives for it.

Exit codes (also in `axle --help` and the README):
    0  done
    1  the job, sweep, pipeline run or deployment you waited for did not succeed
    2  wrong usage (a missing argument, an unknown option, an ambiguous id)
    3  not logged in, or the portal refused the token
    4  no such thing, or not one you may see (job, cluster, model, pipeline…)
    5  refused: the input does not pass validation (the problems are listed)
    6  not allowed (no grant on that cluster, not your job, not an approver…)
    7  the thing's state does not allow it now (cancel a finished job…)
    8  the portal, a cluster or MLflow cannot be reached now
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNSUCCESSFUL = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_REFUSED = 5
EXIT_FORBIDDEN = 6
EXIT_CONFLICT = 7
EXIT_UNAVAILABLE = 8
EXIT_INTERRUPTED = 130


class AxleError(Exception):
    """An error a person can act on: `message` says what and what to do."""

    exit_code = EXIT_UNSUCCESSFUL

    def __init__(self, message: str, *, status: int | None = None, problems: list[dict] | None = None, body=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.problems = problems or []
        self.body = body


class UsageError(AxleError):
    exit_code = EXIT_USAGE


class AuthError(AxleError):
    exit_code = EXIT_AUTH


class NotFoundError(AxleError):
    exit_code = EXIT_NOT_FOUND


class RefusedError(AxleError):
    exit_code = EXIT_REFUSED


class ForbiddenError(AxleError):
    exit_code = EXIT_FORBIDDEN


class ConflictError(AxleError):
    exit_code = EXIT_CONFLICT


class UnavailableError(AxleError):
    exit_code = EXIT_UNAVAILABLE


class Unsuccessful(AxleError):
    """What was waited for ended, but not well (a failed or cancelled job, a rejected deployment)."""

    exit_code = EXIT_UNSUCCESSFUL


BY_STATUS = {400: RefusedError, 401: AuthError, 403: ForbiddenError, 404: NotFoundError, 409: ConflictError}
