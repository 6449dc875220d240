from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpResponseServerError, JsonResponse
from django.shortcuts import render
from django.template import loader
from django.views import defaults


@login_not_required
def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


def _api(request) -> bool:
    return request.path.startswith("/api/")


def permission_denied(request, exception=None):
    """403: JSON under /api/, the branded page elsewhere."""
    if _api(request):
        return JsonResponse({"detail": "You do not have permission to perform this action."}, status=403)
    return defaults.permission_denied(request, exception)


def server_error(request):
    """500 without touching the database (the failure may be the database): JSON under /api/,
    otherwise templates/500.html rendered with no request context."""
    request_id = getattr(request, "request_id", "")
    if _api(request):
        return JsonResponse({"detail": "Server error.", "request_id": request_id}, status=500)
    body = loader.get_template("500.html").render({"request_id": request_id})
    return HttpResponseServerError(body)


@login_not_required
def csrf_failure(request, reason=""):
    """A form whose CSRF token no longer matches: say what happened and how to retry."""
    if _api(request):
        return JsonResponse({"detail": f"CSRF check failed: {reason}"}, status=403)
    return render(request, "403_csrf.html", {"reason": reason}, status=403)
