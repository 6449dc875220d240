import time

from django.conf import settings
from django.contrib.auth import SESSION_KEY, logout

LAST_SEEN = "axle_last_seen"


def session_mark_seen(session) -> None:
    session[LAST_SEEN] = int(time.time())


class SessionIdleTimeoutMiddleware:
    """Log a browser session out after AXLE_SESSION_IDLE_SECONDS without a request.

    The last request's time is kept in the session, refreshed at most every minute (or half
    the idle time, if shorter) so that not every request writes the session. Logging out sends
    Django's user_logged_out signal, so the expiry is audited like any logout; the login page
    follows (LoginRequiredMiddleware), or a 401/403 for the API."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        idle = settings.AXLE_SESSION_IDLE_SECONDS
        session = getattr(request, "session", None)
        if idle > 0 and session is not None and SESSION_KEY in session:
            now = int(time.time())
            last = session.get(LAST_SEEN)
            if last is not None and now - last > idle:
                logout(request)
            elif last is None or now - last >= min(60, max(1, idle // 2)):
                session_mark_seen(session)
        return self.get_response(request)
