"""``{% pipeline_triggers pipeline %}``: the triggers section of a pipeline's page (its webhook,
polling and schedules with their next fire times), drawn from this app's own rows."""

from django import template

from ..views import triggers_context

register = template.Library()


@register.inclusion_tag("pipelines/triggers/_section.html", takes_context=True)
def pipeline_triggers(context, pipeline):
    return triggers_context(context["request"], pipeline, csrf_token=context.get("csrf_token"))
