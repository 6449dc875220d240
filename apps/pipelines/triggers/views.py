"""The webhook endpoint forges call, and the forms of the triggers section on a pipeline's page."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.security import client_ip
from apps.core.errors import ApplicationError, NotFound
from apps.core.live import is_live_poll, live_answer, live_version

from . import selectors, services
from .forges import FORGE_NAMES


def webhook_url(request, pipeline) -> str:
    return request.build_absolute_uri(reverse("pipeline-webhook", args=[pipeline.uuid]))


def triggers_context(request, pipeline, *, csrf_token=None) -> dict:
    """What the triggers section draws (its webhook, polling and schedules with their next
    fire times, from this app's own rows), with the live version of the parts that change
    by themselves: the deliveries, the last poll, the schedules' next and last runs."""
    settings_row = selectors.trigger_settings_get(pipeline=pipeline)
    deliveries = selectors.delivery_list(pipeline=pipeline)
    schedules = []
    for s in selectors.schedule_list(pipeline=pipeline):
        # Formatted here: the date filter would show it on the hub's clocks, not the schedule's.
        local = s.next_fire_at.astimezone(ZoneInfo(s.timezone)) if s.next_fire_at else None
        schedules.append({"row": s, "next_local": f"{local:%Y-%m-%d %H:%M}" if local else ""})
    version = live_version(
        [(d.pk, d.outcome, d.message) for d in deliveries],
        [
            settings_row.polling_enabled,
            settings_row.last_polled_at,
            settings_row.last_seen_commit,
            settings_row.last_poll_error,
        ],
        [(s["row"].pk, s["row"].next_fire_at, s["row"].last_fired_at, s["row"].last_outcome) for s in schedules],
    )
    return {
        "request": request,
        "csrf_token": csrf_token,
        "pipeline": pipeline,
        "settings": settings_row,
        "webhook_url": webhook_url(request, pipeline),
        "forges": FORGE_NAMES.values(),
        "deliveries": deliveries,
        "schedules": schedules,
        "live_version": version,
    }


@require_GET
def triggers_live(request, pipeline_id):
    """The live poll of a pipeline page's triggers section (apps.core.live): the deliveries,
    the last poll and the schedules, swapped in place when they changed; the section's forms
    are not redrawn, so what a member is typing stays."""
    if not is_live_poll(request):
        return _back(_pipeline(request, pipeline_id))
    context = triggers_context(request, _pipeline(request, pipeline_id), csrf_token=get_token(request))
    return live_answer(
        request,
        version=context["live_version"],
        final=False,  # a push, a poll or a schedule may change it at any time
        render=lambda: render(request, "pipelines/triggers/_live.html", {**context, "oob": True}),
    )


@csrf_exempt  # a forge has no session and no CSRF token: its signature is the proof
@login_not_required
@require_POST
def webhook(request, pipeline_id):
    """A push delivery from GitHub, GitLab or Gitea. Answers quickly and contacts no cluster:
    202 when a run starts, 200/202 with the reason when the delivery is ignored, 403 for a bad
    signature, 404 when the pipeline has no webhook, 413 for a body over the limit."""
    limit = settings.AXLE_WEBHOOK_MAX_BYTES
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _answer(400, "Content-Length is not a number.")
    if length > limit:
        return _answer(413, f"The body is larger than {limit} bytes.")
    body = request.read(limit + 1)
    if len(body) > limit:
        return _answer(413, f"The body is larger than {limit} bytes.")
    try:
        answer = services.webhook_receive(
            pipeline_id=pipeline_id, headers=request.headers, body=body, remote_addr=client_ip(request)
        )
    except NotFound as exc:
        return _answer(404, exc.message)
    return _answer(answer.status, answer.message, run=str(answer.run.uuid) if answer.run else None)


def _answer(status: int, message: str, **extra) -> JsonResponse:
    return JsonResponse({"message": message, **{k: v for k, v in extra.items() if v}}, status=status)


def _pipeline(request, pipeline_id):
    try:
        return selectors.pipeline_for_triggers(user=request.user, pipeline_id=pipeline_id)
    except NotFound:
        raise Http404("No such pipeline.") from None


def _back(pipeline):
    return redirect(reverse("pipeline-detail", args=[pipeline.uuid]) + "#triggers")


@never_cache
@require_POST
def webhook_secret(request, pipeline_id):
    """Make (or replace) the webhook secret and show it, this once, with the URL to give the forge."""
    pipeline = _pipeline(request, pipeline_id)
    try:
        row, secret = services.webhook_secret_rotate(user=request.user, pipeline=pipeline)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return _back(pipeline)
    return render(
        request,
        "pipelines/triggers/secret.html",
        {
            "pipeline": pipeline,
            "secret": secret,
            "url": webhook_url(request, pipeline),
            "set_at": row.webhook_secret_set_at,
        },
    )


@require_POST
def webhook_disable(request, pipeline_id):
    pipeline = _pipeline(request, pipeline_id)
    try:
        services.webhook_disable(user=request.user, pipeline=pipeline)
        messages.success(request, "The webhook is off: deliveries to its URL are refused.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return _back(pipeline)


@require_POST
def polling(request, pipeline_id):
    pipeline = _pipeline(request, pipeline_id)
    enabled = request.POST.get("enabled") in ("on", "true", "1")
    raw = request.POST.get("interval_minutes", "").strip()
    try:
        interval = int(raw) if raw else None
    except ValueError:
        messages.error(request, "interval_minutes: a whole number of minutes.")
        return _back(pipeline)
    try:
        row = services.polling_set(user=request.user, pipeline=pipeline, enabled=enabled, interval_minutes=interval)
        messages.success(
            request,
            f"Polling every {row.poll_interval_minutes} min." if row.polling_enabled else "Polling is off.",
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return _back(pipeline)


@require_POST
def schedule_add(request, pipeline_id):
    pipeline = _pipeline(request, pipeline_id)
    try:
        schedule = services.schedule_create(
            user=request.user,
            pipeline=pipeline,
            cron_expression=request.POST.get("cron", ""),
            tz_name=request.POST.get("timezone", "") or "UTC",
            allow_concurrent=request.POST.get("allow_concurrent") in ("on", "true", "1"),
        )
        messages.success(request, f"Schedule {schedule.cron} ({schedule.timezone}) added.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return _back(pipeline)


@require_POST
def schedule_remove(request, pipeline_id, schedule_id):
    pipeline = _pipeline(request, pipeline_id)
    try:
        schedule = selectors.schedule_get(pipeline=pipeline, schedule_id=schedule_id)
        services.schedule_delete(user=request.user, schedule=schedule)
        messages.success(request, f"Schedule {schedule.cron} removed.")
    except NotFound:
        raise Http404("No such schedule.") from None
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return _back(pipeline)
