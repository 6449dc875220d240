"""Live regions: parts of a server-rendered page that re-render when the state behind them
changes, with htmx polling and no front-end build.

The pattern, for any page (the job page and the job lists use it; sweeps, pipeline runs and
deployments can adopt it the same way):

1. Put each part that depends on state in its own include with a stable ``id`` and an
   ``{% if oob %}hx-swap-oob="true"{% endif %}`` on its root element.
2. In the view, compute a version of that state with :func:`live_version` (a hash of
   whatever the parts render) and put ``{% live_poller name url version final %}`` (from
   ``{% load axle %}``) on the page. While ``final`` is false it asks ``url?live=<version>``
   every few seconds.
3. Answer that request with :func:`live_answer`: when the version the browser holds is still
   current it answers **204** (htmx swaps nothing; nothing is rendered, so a poll costs the
   queries that compute the version and no more), or **286** once the state is final (htmx
   stops polling). Otherwise it renders a response that carries every region with
   ``oob=True``, plus the poller itself with the new version, and an ``ETag``.

The browser's own state (a half-typed form, a checked box, a scroll position) survives: only
the regions are swapped, and a region may mark elements ``hx-preserve``.
"""

import hashlib
import json
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

#: htmx stops polling an element that receives this status.
STOP_POLLING = 286


def live_version(*parts) -> str:
    """A short, stable digest of the state a page's live regions render."""
    canonical = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def is_live_poll(request: HttpRequest) -> bool:
    """The request comes from a live poller (rather than a visit to the page)."""
    return "live" in request.GET and request.headers.get("HX-Request") == "true"


def live_answer(request: HttpRequest, *, version: str, final: bool, render: Callable[[], HttpResponse]) -> HttpResponse:
    """204 (or 286 when final) when the browser holds ``version``; otherwise ``render()``."""
    held = request.GET.get("live", "")
    if held == version or request.headers.get("If-None-Match", "").strip('"') == version:
        response = HttpResponse(status=STOP_POLLING if final else 204)
    else:
        response = render()
    response["ETag"] = f'"{version}"'
    response["Cache-Control"] = "no-cache, private"
    return response
