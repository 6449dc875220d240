"""Who is knocking: the client address django-axes counts failed logins against."""

from django.conf import settings


def client_ip(request) -> str:
    """The connection's address, or behind AXLE_TRUSTED_PROXIES proxies the address the
    outermost trusted proxy saw. Addresses further left in X-Forwarded-For are the client's
    own claim, so they are never believed: a forged header cannot dodge the per-address lockout."""
    remote = request.META.get("REMOTE_ADDR", "") or ""
    trusted = getattr(settings, "AXLE_TRUSTED_PROXIES", 0)
    if trusted <= 0:
        return remote
    forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
    if len(forwarded) < trusted:
        return remote
    return forwarded[-trusted]


def lockout_response(request, original_response, credentials):
    """What a locked-out login gets (django-axes' AXES_LOCKOUT_CALLABLE): 429 with a sentence,
    as JSON for the API token exchange and as the login card for the dashboard and admin."""
    from django.http import JsonResponse
    from django.shortcuts import render

    minutes = max(1, round(settings.AXES_COOLOFF_TIME.total_seconds() / 60))
    message = (
        f"Too many failed logins for this account or from this address: logging in is locked for {minutes} "
        "minutes. Ask an administrator if it is urgent."
    )
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=429)
    return render(request, "registration/locked_out.html", {"message": message}, status=429)
