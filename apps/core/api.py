from django.http import JsonResponse
from django.views.defaults import page_not_found
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import ApplicationError


def exception_handler(exc, ctx):
    if isinstance(exc, ApplicationError):
        body = {"detail": exc.message}
        body.update(exc.extra)
        return Response(body, status=exc.status_code)
    return drf_exception_handler(exc, ctx)


def not_found(request, exception=None):
    """A URL no route matches (an id that is not a uuid, say): JSON under /api/, as every other
    API answer is, and the usual page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "No such thing, or not one you may see."}, status=404)
    return page_not_found(request, exception)
