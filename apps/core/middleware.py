import re

from django.contrib.auth.middleware import LoginRequiredMiddleware as DjangoLoginRequiredMiddleware
from django.http import JsonResponse
from django.shortcuts import render

from . import context

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class LoginRequiredMiddleware(DjangoLoginRequiredMiddleware):
    """Every page needs a logged-in user unless its view is marked ``login_not_required``.

    The API under /api/ authenticates inside DRF (tokens as well as sessions) and answers
    401/403 itself, so a script gets a status code instead of a redirect to a login form."""

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.path_info.startswith("/api/"):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)


class RequestContextMiddleware:
    """Give each request an id (or keep a sane one a proxy sent) and record who acts."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else context.new_request_id()
        user = getattr(request, "user", None)
        actor_id = user.pk if user is not None and user.is_authenticated else None
        with context.bind(request_id=request_id, actor_id=actor_id):
            request.request_id = request_id
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


class NulRefusedMiddleware:
    """A NUL character in the path or a query parameter (its name or a value) is refused with
    400 before any view sees it: no database stores one (PostgreSQL refuses it as a server
    error), so no id, name, filter, search or page number may carry one. JSON under /api/,
    the error page elsewhere (its own template: Django's 400 page for other bad requests is
    left as it is)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        where = ""
        if "\x00" in request.path_info:
            where = "The address"
        elif any("\x00" in name or any("\x00" in value for value in values) for name, values in request.GET.lists()):
            where = "A query parameter"
        if where:
            message = f"{where} holds a NUL character, which nothing here can take."
            if request.path_info.startswith("/api/"):
                return JsonResponse({"detail": message}, status=400)
            return render(
                request,
                "errors/bad_request.html",
                {"message": message, "request_id": getattr(request, "request_id", "")},
                status=400,
            )
        return self.get_response(request)
