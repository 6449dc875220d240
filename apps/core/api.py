from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import ApplicationError


def exception_handler(exc, ctx):
    if isinstance(exc, ApplicationError):
        body = {"detail": exc.message}
        body.update(exc.extra)
        return Response(body, status=exc.status_code)
    return drf_exception_handler(exc, ctx)
