"""``{% pipeline_triggers pipeline %}``: the triggers section of a pipeline's page (its webhook,
polling and schedules with their next fire times), drawn from this app's own rows."""

from zoneinfo import ZoneInfo

from django import template

from .. import selectors
from ..forges import FORGE_NAMES
from ..views import webhook_url

register = template.Library()


@register.inclusion_tag("pipelines/triggers/_section.html", takes_context=True)
def pipeline_triggers(context, pipeline):
    request = context["request"]
    schedules = []
    for s in selectors.schedule_list(pipeline=pipeline):
        # Formatted here: the date filter would show it on the hub's clocks, not the schedule's.
        local = s.next_fire_at.astimezone(ZoneInfo(s.timezone)) if s.next_fire_at else None
        schedules.append({"row": s, "next_local": f"{local:%Y-%m-%d %H:%M}" if local else ""})
    return {
        "request": request,
        "csrf_token": context.get("csrf_token"),
        "pipeline": pipeline,
        "settings": selectors.trigger_settings_get(pipeline=pipeline),
        "webhook_url": webhook_url(request, pipeline),
        "forges": FORGE_NAMES.values(),
        "deliveries": selectors.delivery_list(pipeline=pipeline),
        "schedules": schedules,
    }
