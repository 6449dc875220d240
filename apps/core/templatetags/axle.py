"""The one way the portal shows numbers and times (``{% load axle %}``).

- ``{{ value|metric }}``: a metric rounded to 4 significant digits, the full value on hover.
- ``{{ when|when }}``: a time with its zone, relative ("5 min ago") within a day, exact
  beyond; the exact time (with seconds and zone) is always the hover title. ``|when:"exact"``
  always prints the exact time.
- ``{{ seconds|duration }}``: "1 h 02 min", "3 min 05 s", "42 s".
- ``{% live_poller name url version final %}``: see ``apps.core.live``.
"""

import math
from datetime import datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()

SIGNIFICANT = 4


def metric_text(value) -> str:
    """A number as people read it: 4 significant digits, no exponent between 0.001 and a million."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "∞" if number > 0 else "−∞"
    if number == 0:
        return "0"
    magnitude = abs(number)
    if magnitude >= 1e6 or magnitude < 1e-3:
        return f"{number:.{SIGNIFICANT - 1}e}"
    if number.is_integer():
        return str(int(number))
    decimals = max(SIGNIFICANT - 1 - math.floor(math.log10(magnitude)), 0)
    text = f"{round(number, decimals):.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def metric_full(value) -> str:
    if isinstance(value, float):
        return repr(value)
    return "" if value is None else str(value)


@register.filter
def metric(value):
    """A metric value for a page: rounded, with the full value in the title."""
    text = metric_text(value)
    if value is None or value == "":
        return format_html('<span class="num muted">{}</span>', text)
    return format_html('<span class="num" title="{}">{}</span>', metric_full(value), text)


@register.filter
def metric_plain(value) -> str:
    """The rounded text alone, where no markup may go (an <option>, an attribute)."""
    return metric_text(value)


def exact_text(moment: datetime) -> str:
    local = timezone.localtime(moment)
    return local.strftime("%Y-%m-%d %H:%M:%S ") + (local.tzname() or "")


def relative_text(moment: datetime, now: datetime) -> str:
    delta = (now - moment).total_seconds()
    future = delta < 0
    seconds = abs(delta)
    if seconds < 45:
        return "just now" if not future else "in a few seconds"
    if seconds < 3600:
        amount = f"{round(seconds / 60)} min"
    else:
        amount = f"{round(seconds / 3600)} h"
    return f"in {amount}" if future else f"{amount} ago"


@register.filter
def when(value, style: str = ""):
    """A time with its zone: relative within a day (exact on hover), exact beyond."""
    if not value:
        return format_html('<span class="muted">{}</span>', "—")
    if not isinstance(value, datetime):
        return str(value)
    if timezone.is_naive(value):
        value = timezone.make_aware(value, timezone.get_default_timezone())
    exact = exact_text(value)
    now = timezone.now()
    if style != "exact" and abs(now - value) < timedelta(hours=24):
        text = relative_text(value, now)
    else:
        local = timezone.localtime(value)
        text = local.strftime("%Y-%m-%d %H:%M ") + (local.tzname() or "")
    return format_html('<time datetime="{}" title="{}">{}</time>', value.isoformat(), exact, text)


@register.filter
def duration(seconds) -> str:
    """Seconds as "1 h 02 min", "3 min 05 s" or "42 s"; empty for nothing."""
    if seconds is None or seconds == "":
        return ""
    try:
        total = int(float(seconds))
    except (TypeError, ValueError):
        return ""
    hours, rest = divmod(max(total, 0), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


@register.inclusion_tag("core/_live_poller.html")
def live_poller(name: str, url: str, version: str, final: bool = False, every: str = "3s", oob: bool = False):
    return {"name": name, "url": url, "version": version, "final": final, "every": every, "oob": oob}


@register.filter
def get_item(mapping, key):
    """``{{ job.metrics|get_item:name }}``: a dict's value for a key that is not an identifier."""
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.filter
def safe_back(request) -> str:
    """The page the user came from, when it is one of the hub's own (an error page's way back)."""
    from django.core.exceptions import DisallowedHost
    from django.utils.http import url_has_allowed_host_and_scheme

    referer = getattr(request, "META", {}).get("HTTP_REFERER", "")
    if not referer:
        return ""
    try:
        host = request.get_host()
    except DisallowedHost:  # an error page for a request whose host is not the hub's
        return ""
    return referer if url_has_allowed_host_and_scheme(referer, allowed_hosts={host}) else ""
