from functools import cache

from . import selectors


def approvals_waiting(request):
    """The nav badge: how many deployment requests wait for this user's decision. A callable,
    so the one COUNT runs only when a page with the nav is rendered, not for htmx fragments."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"nav_approvals_waiting": cache(lambda: selectors.waiting_count(user=user))}
