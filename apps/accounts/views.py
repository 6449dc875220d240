from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from apps.core.errors import ApplicationError

from . import selectors, services


@require_http_methods(["GET", "POST"])
def token_list(request):
    new_key = None
    error = None
    if request.method == "POST":
        try:
            _, new_key = services.token_create(user=request.user, name=request.POST.get("name", ""))
        except ApplicationError as exc:
            error = exc.message
    return render(
        request,
        "accounts/tokens.html",
        {"tokens": selectors.token_list(user=request.user), "new_key": new_key, "error": error},
    )


@require_POST
def token_revoke(request, token_uuid):
    try:
        token = services.token_revoke(user=request.user, token_uuid=token_uuid)
        messages.success(request, f"Token “{token.name}” revoked; scripts using it are refused from now on.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("token-list")
