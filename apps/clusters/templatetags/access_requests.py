from django import template

from apps.clusters.selectors import grant_requests_pending

register = template.Library()


@register.simple_tag(takes_context=True)
def pending_access_requests(context, limit: int = 10):
    """(count, the oldest `limit`) of the access requests the current user may decide."""
    pending = grant_requests_pending(user=context["request"].user)
    return {"count": pending.count(), "oldest": list(pending[:limit])}
