"""Writes for a pipeline's triggers: the webhook secret, polling, schedules, and the three ways
a run starts by itself (a push delivery, a poll that sees a new commit, a schedule that is due).

Every change a person makes is audited in its transaction. What a trigger starts is recorded on
the run itself (``trigger``, ``commit``, ``delivery_id``, ``trigger_detail``) and audited by
``pipeline_run_start``. Nothing here talks to a cluster inside a transaction: each trigger
first claims its start with a compare-and-swap (a delivery's unique row, the head a poll saw, a
schedule's next fire time), commits, and only then starts the run, which reads the pipeline
file on the cluster. Of two workers, or a task run twice, one starts the run."""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings as django_settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.accounts.teams import is_team_member, team_member_require
from apps.audit.services import audit_record
from apps.clusters.models import ClusterGrant
from apps.clusters.selectors import grant_for_submission
from apps.core import crypto
from apps.core.errors import ApplicationError, Conflict, NotFound, Unavailable, ValidationFailed
from apps.core.leases import work_lease
from apps.core.tasks import enqueue
from apps.pipelines.models import Pipeline, PipelineRun
from apps.pipelines.services import pipeline_run_start, run_grant_for

from . import cron, forges, gitremote
from .models import PipelineSchedule, TriggerSettings, WebhookDelivery

log = logging.getLogger(__name__)

MIN_POLL_MINUTES, MAX_POLL_MINUTES = 1, 24 * 60
MAX_SCHEDULES = 20
MAX_DELIVERY_ATTEMPTS = 5
DELIVERY_RETRY_SECONDS = 60


def _start_run(
    *,
    pipeline: Pipeline,
    run_as,
    trigger: str,
    key: str,
    commit: str,
    delivery_id: str = "",
    detail: dict,
    unless_active: bool = False,
) -> PipelineRun:
    """Start a run through the pipelines app, which talks to the cluster (it reads the file at
    the commit): never call this inside a transaction. ``key`` names this one start, so
    starting it again (a re-drive) returns the run it made, never a second one."""
    return pipeline_run_start(
        pipeline=pipeline,
        actor=None,
        run_as=run_as,
        trigger=trigger,
        commit=commit,
        delivery_id=delivery_id,
        trigger_detail=detail,
        unless_active=unless_active,
        trigger_key=key,
    )


class TriggerRefused(ApplicationError):
    """The member a trigger runs as may not run it any more (left the team, no active grant)."""


def trigger_runner_check(*, pipeline: Pipeline, user, trigger: str, detail: dict | None = None) -> ClusterGrant:
    """At fire time: the grant of the member who set up the trigger, still a member of the
    pipeline's team and still holding an active grant on its cluster. Otherwise the start is
    refused (TriggerRefused) and audited: a suspended or expired grant runs nothing."""
    grant, reason = _runner_problem(pipeline=pipeline, user=user)
    if grant is None:
        _audit_refusal(pipeline=pipeline, user=user, trigger=trigger, reason=reason, detail=detail)
        raise TriggerRefused(f"refused: {reason}")
    return grant


def _require_runner(*, user, pipeline: Pipeline) -> None:
    """Setting up a trigger: its runs will run as this member's grant, so they need one."""
    run_grant_for(user=user, pipeline=pipeline)


def settings_for(pipeline: Pipeline, *, lock: bool = False) -> TriggerSettings:
    rows = TriggerSettings.objects.select_for_update() if lock else TriggerSettings.objects
    found = rows.filter(pipeline=pipeline).first()
    if found is None:
        try:
            with transaction.atomic():
                found = TriggerSettings.objects.create(pipeline=pipeline)
        except IntegrityError:  # made meanwhile by a concurrent request
            found = rows.get(pipeline=pipeline)
    return found


# ---- changes a team member makes -------------------------------------------------------------


def webhook_secret_rotate(*, user, pipeline: Pipeline) -> tuple[TriggerSettings, str]:
    """Make a new webhook secret (the old one stops working at once) and return it: the only
    time it is ever shown. The audit event says that it changed, never what it is."""
    team_member_require(user=user, team=pipeline.team)
    _require_runner(user=user, pipeline=pipeline)
    secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        row = settings_for(pipeline, lock=True)
        replaced = row.has_webhook
        row.webhook_secret_encrypted = crypto.encrypt(secret)
        row.webhook_secret_set_at = timezone.now()
        row.webhook_set_by = user
        row.save(update_fields=["webhook_secret_encrypted", "webhook_secret_set_at", "webhook_set_by", "updated_at"])
        audit_record(
            action="pipeline.webhook_secret_rotated" if replaced else "pipeline.webhook_secret_created",
            subject=pipeline,
            actor=user,
            after={"set_at": row.webhook_secret_set_at, "runs_as": user.get_username()},
        )
    return row, secret


def webhook_disable(*, user, pipeline: Pipeline) -> TriggerSettings:
    team_member_require(user=user, team=pipeline.team)
    with transaction.atomic():
        row = settings_for(pipeline, lock=True)
        if row.has_webhook:
            row.webhook_secret_encrypted, row.webhook_secret_set_at = "", None
            row.save(update_fields=["webhook_secret_encrypted", "webhook_secret_set_at", "updated_at"])
            audit_record(action="pipeline.webhook_disabled", subject=pipeline, actor=user)
    return row


def webhook_turn_off_by_admin(*, admin, pipeline: Pipeline) -> bool:
    """An administrator turns a pipeline's webhook off (a leaked secret, a forge gone wild): the
    URL answers 404 at once. Audited with the administrator as the actor."""
    with transaction.atomic():
        row = settings_for(pipeline, lock=True)
        if not row.has_webhook:
            return False
        row.webhook_secret_encrypted, row.webhook_secret_set_at = "", None
        row.save(update_fields=["webhook_secret_encrypted", "webhook_secret_set_at", "updated_at"])
        audit_record(action="pipeline.webhook_disabled", subject=pipeline, actor=admin, after={"by": "admin"})
    return True


def polling_turn_off_by_admin(*, admin, pipeline: Pipeline) -> bool:
    with transaction.atomic():
        row = settings_for(pipeline, lock=True)
        if not row.polling_enabled:
            return False
        before = {"enabled": True, "interval_minutes": row.poll_interval_minutes}
        row.polling_enabled, row.poll_next_at = False, None
        row.save(update_fields=["polling_enabled", "poll_next_at", "updated_at"])
        audit_record(
            action="pipeline.polling_changed",
            subject=pipeline,
            actor=admin,
            before=before,
            after={"enabled": False, "interval_minutes": row.poll_interval_minutes, "by": "admin"},
        )
    return True


def schedule_set_enabled(*, actor, schedule: PipelineSchedule, enabled: bool) -> PipelineSchedule:
    """Pause or resume a schedule (the admin's switch). A resumed schedule fires next at its
    next time from now: the times it missed while paused are not made up."""
    with transaction.atomic():
        row = PipelineSchedule.objects.select_for_update().select_related("pipeline").get(pk=schedule.pk)
        if row.enabled == enabled:
            return row
        if enabled:
            row.next_fire_at = cron.next_fire(row.cron, row.timezone, timezone.now())
        row.enabled = enabled
        row.save(update_fields=["enabled", "next_fire_at", "updated_at"])
        audit_record(
            action="pipeline.schedule_resumed" if enabled else "pipeline.schedule_paused",
            subject=row.pipeline,
            actor=actor,
            before={"enabled": not enabled},
            after={
                "schedule": str(row.uuid),
                "cron": row.cron,
                "timezone": row.timezone,
                "enabled": enabled,
                "next_fire_at": row.next_fire_at if enabled else None,
            },
        )
    return row


def polling_set(*, user, pipeline: Pipeline, enabled: bool, interval_minutes: int | None = None) -> TriggerSettings:
    """Turn polling on or off. Turning it on forgets the head seen before: the first poll
    notes the branch's head and starts nothing, every later new head starts one run."""
    team_member_require(user=user, team=pipeline.team)
    if interval_minutes is not None and not MIN_POLL_MINUTES <= interval_minutes <= MAX_POLL_MINUTES:
        raise ValidationFailed(
            f"interval_minutes: poll every {MIN_POLL_MINUTES} to {MAX_POLL_MINUTES} minutes.",
            extra={"problems": [{"path": "interval_minutes", "message": "out of range"}]},
        )
    if enabled:
        _require_runner(user=user, pipeline=pipeline)
    with transaction.atomic():
        row = settings_for(pipeline, lock=True)
        before = {
            "enabled": row.polling_enabled,
            "interval_minutes": row.poll_interval_minutes,
            "runs_as": row.polling_set_by.get_username() if row.polling_enabled and row.polling_set_by else None,
        }
        if interval_minutes is not None:
            row.poll_interval_minutes = interval_minutes
        if enabled and not row.polling_enabled:
            row.last_seen_commit, row.last_poll_error, row.poll_next_at = "", "", timezone.now()
        row.polling_enabled = enabled
        if enabled:
            # Polling (and the runs it starts) runs as whoever turned it on or changed it last.
            row.polling_set_by = user
        else:
            row.poll_next_at = None
        row.save()
        after = {
            "enabled": row.polling_enabled,
            "interval_minutes": row.poll_interval_minutes,
            "runs_as": user.get_username() if enabled else None,
        }
        if after != before:
            audit_record(action="pipeline.polling_changed", subject=pipeline, actor=user, before=before, after=after)
    return row


def schedule_create(
    *, user, pipeline: Pipeline, cron_expression: str, tz_name: str = "UTC", allow_concurrent: bool = False
) -> PipelineSchedule:
    team_member_require(user=user, team=pipeline.team)
    _require_runner(user=user, pipeline=pipeline)
    try:
        expression = cron.check(cron_expression)
        first = cron.next_fire(expression, tz_name, timezone.now())
    except cron.CronError as exc:
        raise ValidationFailed(
            f"{exc.field}: {exc.message}", extra={"problems": [{"path": exc.field, "message": exc.message}]}
        ) from None
    with transaction.atomic():
        # Locked so two requests cannot both pass the limit.
        Pipeline.objects.select_for_update().filter(pk=pipeline.pk).first()
        if pipeline.schedules.count() >= MAX_SCHEDULES:
            raise ValidationFailed(f"A pipeline has at most {MAX_SCHEDULES} schedules.")
        schedule = PipelineSchedule.objects.create(
            pipeline=pipeline,
            cron=expression,
            timezone=tz_name.strip(),
            allow_concurrent=allow_concurrent,
            next_fire_at=first,
            created_by=user,
        )
        audit_record(
            action="pipeline.schedule_added",
            subject=pipeline,
            actor=user,
            after={
                "schedule": str(schedule.uuid),
                "cron": expression,
                "timezone": schedule.timezone,
                "allow_concurrent": allow_concurrent,
                "next_fire_at": first,
                "runs_as": user.get_username(),
            },
        )
    return schedule


def schedule_ensure(*, user, pipeline: Pipeline, cron_expression: str, tz_name: str = "UTC") -> PipelineSchedule:
    """The pipeline's schedule with this expression and zone, made if it has none (seeding)."""
    expression = cron.check(cron_expression)
    found = pipeline.schedules.filter(cron=expression, timezone=tz_name).first()
    return found or schedule_create(user=user, pipeline=pipeline, cron_expression=expression, tz_name=tz_name)


def schedule_delete(*, user, schedule: PipelineSchedule) -> None:
    pipeline = schedule.pipeline
    team_member_require(user=user, team=pipeline.team)
    with transaction.atomic():
        audit_record(
            action="pipeline.schedule_removed",
            subject=pipeline,
            actor=user,
            before={"schedule": str(schedule.uuid), "cron": schedule.cron, "timezone": schedule.timezone},
        )
        schedule.delete()


# ---- webhooks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    message: str
    run: PipelineRun | None = None


def webhook_receive(*, pipeline_id, headers: Mapping[str, str], body: bytes, remote_addr: str) -> WebhookAnswer:
    """Judge one delivery to a pipeline's webhook URL and queue at most one run.

    No cluster is contacted: the push names its commit, and the run is submitted by the
    worker. A refused signature is audited and starts nothing."""
    pipeline = Pipeline.objects.filter(uuid=pipeline_id).select_related("team").first()
    row = TriggerSettings.objects.filter(pipeline=pipeline).first() if pipeline else None
    if row is None or not row.has_webhook:
        # The same answer for "no such pipeline" and "no webhook": the URL reveals nothing.
        raise NotFound("No webhook here.")
    try:
        forge = forges.detect(headers)
        forges.verify(forge, headers, body, crypto.decrypt(row.webhook_secret_encrypted))
    except forges.BadSignature as exc:
        with transaction.atomic():
            audit_record(
                action="pipeline.webhook_rejected",
                subject=pipeline,
                after={
                    "forge": forge,
                    "reason": exc.message,
                    "remote_addr": remote_addr,
                    "delivery": _claimed_delivery(headers),
                },
            )
        return WebhookAnswer(403, exc.message)
    except forges.WebhookRefused as exc:
        return WebhookAnswer(exc.status, exc.message)
    except crypto.SecretUnreadable:
        log.error("the webhook secret of pipeline %s cannot be decrypted with the configured keys", pipeline.uuid)
        return WebhookAnswer(503, "This pipeline's webhook secret cannot be read by the hub; rotate it.")

    try:
        info = forges.delivery(forge, headers)
        if not info.is_push:
            if info.event == "ping":
                return WebhookAnswer(200, "pong: the secret matches.")
            return WebhookAnswer(200, f"ignored: {info.event or 'this'} event is not a push.")
        push = forges.parse_push(body)
    except forges.WebhookRefused as exc:
        return WebhookAnswer(exc.status, exc.message)

    body_sha256 = hashlib.sha256(body).hexdigest()
    ignored = ""
    if push.branch != pipeline.branch:
        ignored = f"ignored: a push to {push.ref}; this pipeline follows refs/heads/{pipeline.branch}."
    elif push.deleted:
        ignored = f"ignored: the branch {pipeline.branch} was deleted."
    try:
        with transaction.atomic():
            # The unique row is the claim: a replay (same id, or same body) fails here.
            delivery = WebhookDelivery.objects.create(
                pipeline=pipeline,
                forge=forge,
                delivery_id=info.delivery_id,
                body_sha256=body_sha256,
                event=info.event,
                ref=push.ref,
                commit=push.after,
                outcome=WebhookDelivery.Outcome.IGNORED if ignored else WebhookDelivery.Outcome.QUEUED,
                message=ignored,
            )
            audit_record(
                action="pipeline.webhook_ignored" if ignored else "pipeline.webhook_accepted",
                subject=pipeline,
                after={
                    "forge": forge,
                    "delivery_id": info.delivery_id,
                    "ref": push.ref,
                    "commit": push.after,
                    "reason": ignored or None,
                },
            )
            if not ignored:
                # The run is started by the worker: reading the pipeline file at the commit is a
                # round trip to the cluster, which a forge's request should not wait for.
                enqueue("apps.pipelines.triggers.tasks.webhook_delivery_start", delivery.pk)
    except IntegrityError:
        return WebhookAnswer(200, f"ignored: delivery {info.delivery_id} (or the same body) was received before.")
    if ignored:
        return WebhookAnswer(202, ignored)
    return WebhookAnswer(202, f"accepted: a run of {pipeline.name} at {push.after[:12]} is being started.")


def delivery_lease_name(delivery_id: int) -> str:
    """Held while a worker starts a delivery's run (apps.core.leases.work_lease): "is this start
    in flight?" is "can its lease be taken?", as for a job (apps.jobs.services.redrive)."""
    return f"webhook-delivery:{delivery_id}"


def webhook_delivery_start(*, delivery_id: int, redrive: bool = False) -> PipelineRun | None:
    """Start the run a queued delivery asked for, once: the delivery is claimed (queued →
    starting) under its lease before the run starts, so a task that runs twice starts one run.
    A cluster that cannot be reached puts it back in the queue; the triggers' periodic task
    tries again. With ``redrive``, a delivery left ``starting`` by a worker that died is taken
    too (its lease is free, so nobody is starting it): the run is keyed by the delivery, so if
    the dead worker had recorded it, that run is found and no second one is made."""
    with work_lease(delivery_lease_name(delivery_id)) as mine:
        if not mine:
            return None  # another worker is starting it
        takes = [WebhookDelivery.Outcome.QUEUED] + ([WebhookDelivery.Outcome.STARTING] if redrive else [])
        claimed = WebhookDelivery.objects.filter(pk=delivery_id, outcome__in=takes).update(
            outcome=WebhookDelivery.Outcome.STARTING, attempts=F("attempts") + 1, claimed_at=timezone.now()
        )
        if not claimed:
            return None
        if redrive and WebhookDelivery.objects.filter(pk=delivery_id, attempts__gt=MAX_DELIVERY_ATTEMPTS).update(
            outcome=WebhookDelivery.Outcome.FAILED,
            message=f"no run started: its worker stopped while starting it {MAX_DELIVERY_ATTEMPTS} times.",
        ):
            return None
        return _delivery_start(delivery_id)


def _delivery_start(delivery_id: int) -> PipelineRun | None:
    delivery = WebhookDelivery.objects.select_related(
        "pipeline__grant__cluster", "pipeline__owner", "pipeline__team", "pipeline__cluster"
    ).get(pk=delivery_id)
    pipeline = delivery.pipeline
    detail = {"forge": delivery.forge, "delivery_id": delivery.delivery_id, "ref": delivery.ref}
    try:
        row = TriggerSettings.objects.select_related("webhook_set_by").get(pipeline=pipeline)
        runner = row.webhook_set_by
        trigger_runner_check(pipeline=pipeline, user=runner, trigger="push", detail=detail)
        run = _start_run(
            pipeline=pipeline,
            run_as=runner,
            trigger=PipelineRun.Trigger.PUSH,
            key=f"push:{delivery.pk}",
            commit=delivery.commit,
            delivery_id=delivery.delivery_id,
            detail=detail,
        )
    except Unavailable as exc:
        again = delivery.attempts < MAX_DELIVERY_ATTEMPTS
        WebhookDelivery.objects.filter(pk=delivery_id).update(
            outcome=WebhookDelivery.Outcome.QUEUED if again else WebhookDelivery.Outcome.FAILED,
            message=exc.message + (" Trying again shortly." if again else ""),
        )
        return None
    except ApplicationError as exc:  # refused (TriggerRefused, audited), or the file at fault
        WebhookDelivery.objects.filter(pk=delivery_id).update(
            outcome=WebhookDelivery.Outcome.FAILED, message=f"no run started: {exc.message}"
        )
        return None
    WebhookDelivery.objects.filter(pk=delivery_id).update(
        outcome=WebhookDelivery.Outcome.STARTED, run=run, message=f"started run #{run.number}"
    )
    return run


def deliveries_retry(*, now: datetime | None = None) -> int:
    """Queued deliveries whose first try found the cluster unreachable (or whose task was
    lost with a worker), tried again a while later."""
    now = now or timezone.now()
    waiting = WebhookDelivery.objects.filter(
        outcome=WebhookDelivery.Outcome.QUEUED,
        received_at__lte=now - timedelta(seconds=DELIVERY_RETRY_SECONDS),
        received_at__gte=now - timedelta(hours=1),
    ).values_list("pk", flat=True)
    count = 0
    for pk in list(waiting[:50]):
        webhook_delivery_start(delivery_id=pk)
        count += 1
    return count


def _claimed_delivery(headers: Mapping[str, str]) -> str:
    for name in ("X-GitHub-Delivery", "X-Gitea-Delivery", "Idempotency-Key", "X-Gitlab-Event-UUID"):
        value = headers.get(name, "")
        if value:
            return value[:100] if forges.DELIVERY.match(value[:100]) else "(not a delivery id)"
    return ""


# ---- polling ---------------------------------------------------------------------------------


def poll_lease_name(settings_id: int) -> str:
    return f"pipeline-poll:{settings_id}"


def polls_due(*, now: datetime | None = None) -> int:
    """Poll every repository with a pipeline due for it: one ``git ls-remote`` per repository and
    grant, whatever the number of pipelines that follow it. Each pipeline polls as the grant of
    the member who turned its polling on, checked each time. Returns the number of calls made."""
    now = now or timezone.now()
    due = list(
        TriggerSettings.objects.filter(polling_enabled=True, poll_next_at__lte=now)
        .select_related("pipeline__cluster", "pipeline__team", "polling_set_by")
        .order_by("pk")
    )
    groups: dict[tuple[int, str], list[TriggerSettings]] = {}
    grants: dict[int, ClusterGrant] = {}
    for row in due:
        grant, reason = _runner_problem(pipeline=row.pipeline, user=row.polling_set_by)
        if grant is None:
            message = f"refused: {reason}"
            if (
                TriggerSettings.objects.filter(pk=row.pk, poll_next_at=row.poll_next_at).update(
                    poll_next_at=now + timedelta(minutes=row.poll_interval_minutes),
                    last_polled_at=now,
                    last_poll_error=message,
                )
                and row.last_poll_error != message
            ):
                _audit_refusal(pipeline=row.pipeline, user=row.polling_set_by, trigger="poll", reason=reason)
            continue
        grants[grant.pk] = grant
        groups.setdefault((grant.pk, row.pipeline.repo_url), []).append(row)
    calls = 0
    for (grant_id, repo), rows in groups.items():
        # Claim the rows first (compare-and-swap on the time read): of two workers, one polls.
        claimed = [
            r
            for r in rows
            if TriggerSettings.objects.filter(pk=r.pk, poll_next_at=r.poll_next_at, polling_enabled=True).update(
                poll_next_at=now + timedelta(minutes=r.poll_interval_minutes)
            )
        ]
        if not claimed:
            continue
        grant = grants[grant_id]
        branches = sorted({r.pipeline.branch for r in claimed})
        calls += 1
        try:
            heads = gitremote.branch_heads(grant=grant, repo=repo, branches=branches)
        except gitremote.RemoteError as exc:
            TriggerSettings.objects.filter(pk__in=[r.pk for r in claimed]).update(
                last_polled_at=now, last_poll_error=exc.message
            )
            continue
        for row in claimed:
            head = heads.get(row.pipeline.branch)
            if head is None:
                TriggerSettings.objects.filter(pk=row.pk).update(
                    last_polled_at=now, last_poll_error=f"{repo} has no branch {row.pipeline.branch}."
                )
                continue
            _poll_saw(row=row, head=head, now=now)
    return calls


def _poll_saw(*, row: TriggerSettings, head: str, now: datetime) -> PipelineRun | None:
    with work_lease(poll_lease_name(row.pk)) as mine:
        if not mine:
            return None
        is_new = bool(row.last_seen_commit) and row.last_seen_commit != head
        pending = (
            {"key": uuid.uuid4().hex, "commit": head, "previous": row.last_seen_commit, "polled_at": now.isoformat()}
            if is_new
            else {}
        )
        # The head seen last is compared and replaced in one statement: a new commit is taken
        # by exactly one poll, which alone starts its run. It is noted as pending until its run
        # is recorded, so a worker dying in between leaves it to the re-drive, not lost.
        taken = TriggerSettings.objects.filter(
            pk=row.pk, last_seen_commit=row.last_seen_commit, poll_pending={}
        ).update(
            last_seen_commit=head,
            last_polled_at=now,
            last_poll_error="",
            **({"poll_pending": pending, "poll_pending_at": now} if is_new else {}),
        )
        if not taken or not is_new:
            return None
        return _poll_start(row_id=row.pk, pending=pending)


def _poll_start(*, row_id: int, pending: dict) -> PipelineRun | None:
    """Start the run of the new head a poll took (under the poll's lease), once: the run is keyed
    by the pending start, and the pending note is cleared whatever the outcome."""
    row = TriggerSettings.objects.select_related(
        "pipeline__grant__cluster", "pipeline__cluster", "pipeline__team", "polling_set_by"
    ).get(pk=row_id)
    mine = TriggerSettings.objects.filter(pk=row_id, poll_pending__key=pending["key"])
    try:
        return _poll_start_run(row=row, pending=pending, mine=mine)
    except Exception:
        # A bug, not a dead worker (that leaves it pending): settled, never re-driven forever.
        mine.update(poll_pending={}, poll_pending_at=None)
        raise


def _poll_start_run(*, row: TriggerSettings, pending: dict, mine) -> PipelineRun | None:
    head, previous = pending["commit"], pending.get("previous", "")
    try:
        trigger_runner_check(pipeline=row.pipeline, user=row.polling_set_by, trigger="poll", detail={"commit": head})
        run = _start_run(
            pipeline=row.pipeline,
            run_as=row.polling_set_by,
            trigger=PipelineRun.Trigger.POLL,
            key=f"poll:{pending['key']}",
            commit=head,
            detail={"previous": previous, "polled_at": pending.get("polled_at")},
        )
    except Unavailable as exc:
        # Give the commit back, so the next poll takes it again.
        mine.filter(last_seen_commit=head).update(
            last_seen_commit=previous,
            poll_pending={},
            poll_pending_at=None,
            last_poll_error=f"no run started for {head[:12]} yet: {exc.message}",
        )
        return None
    except ApplicationError as exc:
        # Seen all the same: a commit gets one attempt, not one per poll.
        mine.update(
            poll_pending={}, poll_pending_at=None, last_poll_error=f"no run started for {head[:12]}: {exc.message}"
        )
        return None
    mine.update(poll_pending={}, poll_pending_at=None)
    return run


# ---- schedules -------------------------------------------------------------------------------


def schedule_lease_name(schedule_id: int) -> str:
    return f"pipeline-schedule:{schedule_id}"


def schedules_due(*, now: datetime | None = None) -> list[PipelineSchedule]:
    """Fire every enabled schedule whose time has come, each once however many of its times
    passed meanwhile (a hub that was down does not catch up with a burst of runs)."""
    now = now or timezone.now()
    fired = []
    due = PipelineSchedule.objects.filter(enabled=True, next_fire_at__lte=now).select_related(
        "pipeline__grant__cluster", "pipeline__cluster", "pipeline__team", "created_by"
    )
    for schedule in due.order_by("next_fire_at"):
        try:
            following = cron.next_fire(schedule.cron, schedule.timezone, now)
        except cron.CronError as exc:
            PipelineSchedule.objects.filter(pk=schedule.pk).update(enabled=False, last_outcome=exc.message)
            continue
        with work_lease(schedule_lease_name(schedule.pk)) as mine:
            if not mine:
                continue
            pending = {
                "key": uuid.uuid4().hex,
                "due_at": schedule.next_fire_at.isoformat() if schedule.next_fire_at else None,
            }
            # The claim: only the worker that moves next_fire_at on from the value it read fires.
            # The fire stays pending until its run is recorded (see the re-drive).
            if not PipelineSchedule.objects.filter(pk=schedule.pk, next_fire_at=schedule.next_fire_at).update(
                next_fire_at=following, last_fired_at=now, pending=pending, pending_at=now
            ):
                continue
            _schedule_fire(schedule=schedule, pending=pending)
            fired.append(schedule)
    return fired


def _schedule_fire(*, schedule: PipelineSchedule, pending: dict) -> PipelineRun | None:
    done = PipelineSchedule.objects.filter(pk=schedule.pk, pending__key=pending["key"])
    try:
        run = _schedule_start(schedule=schedule, pending=pending)
    except Exception:
        # A bug, not a dead worker: settled (and logged by the tick), never re-driven forever.
        done.update(pending={}, pending_at=None)
        raise
    # Not in a ``finally``: a worker killed mid-start leaves the fire pending, for the re-drive.
    done.update(pending={}, pending_at=None)
    return run


def _schedule_start(*, schedule: PipelineSchedule, pending: dict) -> PipelineRun | None:
    pipeline = schedule.pipeline
    detail = {
        "schedule": str(schedule.uuid),
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "due_at": pending.get("due_at"),
    }
    try:
        grant = trigger_runner_check(pipeline=pipeline, user=schedule.created_by, trigger="schedule", detail=detail)
    except TriggerRefused as exc:
        _outcome(schedule, exc.message)
        return None
    try:
        commit = gitremote.branch_heads(grant=grant, repo=pipeline.repo_url, branches=[pipeline.branch]).get(
            pipeline.branch
        )
    except gitremote.RemoteError as exc:
        PipelineSchedule.objects.filter(pk=schedule.pk).update(last_outcome=f"not started: {exc.message}")
        return None
    if commit is None:
        PipelineSchedule.objects.filter(pk=schedule.pk).update(
            last_outcome=f"not started: {pipeline.repo_url} has no branch {pipeline.branch}."
        )
        return None
    if not schedule.allow_concurrent:
        # Checked here to spare the cluster a read, and again under the pipeline's lock when
        # the run is recorded (unless_active), where a concurrent start cannot slip through.
        active = _active_run(pipeline, commit)
        if active is not None and active.trigger_key != f"schedule:{pending['key']}":
            _outcome(schedule, f"skipped: run #{active.number} of {commit[:12]} is still {active.status}.")
            return None
    try:
        run = _start_run(
            pipeline=pipeline,
            run_as=schedule.created_by,
            trigger=PipelineRun.Trigger.SCHEDULE,
            key=f"schedule:{pending['key']}",
            commit=commit,
            detail=detail,
            unless_active=not schedule.allow_concurrent,
        )
    except Conflict as exc:
        _outcome(schedule, f"skipped: {exc.message}")
        return None
    except ApplicationError as exc:
        _outcome(schedule, f"not started: {exc.message}")
        return None
    PipelineSchedule.objects.filter(pk=schedule.pk).update(
        last_run=run, last_outcome=f"started run #{run.number} at {commit[:12]}."
    )
    return run


def _active_run(pipeline: Pipeline, commit: str) -> PipelineRun | None:
    return (
        PipelineRun.objects.filter(pipeline=pipeline, commit=commit)
        .exclude(status__in=PipelineRun.TERMINAL)
        .order_by("-number")
        .first()
    )


def _outcome(schedule: PipelineSchedule, text: str) -> None:
    PipelineSchedule.objects.filter(pk=schedule.pk).update(last_outcome=text[:2000])


# ---- re-drive --------------------------------------------------------------------------------


@dataclass
class RedriveStats:
    deliveries: int = 0
    polls: int = 0
    schedules: int = 0


def triggers_redrive(*, now: datetime | None = None) -> RedriveStats:
    """Take over every trigger start whose worker died mid-start, as the jobs' re-drive does
    for jobs (apps.jobs.services.redrive): a start in progress holds its lease
    (apps.core.leases.work_lease; on PostgreSQL it dies with the worker's connection), so a
    start left ``starting``/pending whose lease can be taken is nobody's. Starting it again is
    safe: the run is keyed by the start (``PipelineRun.trigger_key``), so a run the dead worker
    had already recorded is found and linked, never made twice."""
    now = now or timezone.now()
    settle = now - timedelta(seconds=django_settings.AXLE_REDRIVE_SETTLE_SECONDS)
    stats = RedriveStats()
    stuck = (
        WebhookDelivery.objects.filter(outcome=WebhookDelivery.Outcome.STARTING)
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=settle))
        .order_by("received_at")
        .values_list("pk", flat=True)
    )
    for pk in list(stuck[:50]):
        # Takes the delivery's lease itself, and leaves it alone when a live worker holds it.
        webhook_delivery_start(delivery_id=pk, redrive=True)
        stats.deliveries += 1
    for row in TriggerSettings.objects.exclude(poll_pending={}).filter(poll_pending_at__lt=settle)[:50]:
        with work_lease(poll_lease_name(row.pk)) as free:
            if free and row.poll_pending:
                _poll_start(row_id=row.pk, pending=row.poll_pending)
                stats.polls += 1
    for schedule in (
        PipelineSchedule.objects.exclude(pending={})
        .filter(pending_at__lt=settle)
        .select_related("pipeline__grant__cluster", "pipeline__cluster", "pipeline__team", "created_by")[:50]
    ):
        with work_lease(schedule_lease_name(schedule.pk)) as free:
            if free and schedule.pending:
                _schedule_fire(schedule=schedule, pending=schedule.pending)
                stats.schedules += 1
    return stats


# ---- whose grant a trigger runs as -----------------------------------------------------------


def _runner_problem(*, pipeline: Pipeline, user) -> tuple[ClusterGrant | None, str]:
    if user is None:
        return None, "the member who set up this trigger no longer exists; set it up again."
    if not user.is_active or not is_team_member(user=user, team=pipeline.team):
        return (
            None,
            f"{user.get_username()}, who set up this trigger, is no longer a member of team {pipeline.team.name}.",
        )
    grant = grant_for_submission(user=user, cluster=pipeline.cluster)
    if grant is None:
        return None, (
            f"{user.get_username()}, whose grant this trigger runs as, has no active grant on cluster "
            f"{pipeline.cluster.name} (suspended, expired or revoked)."
        )
    return grant, ""


def _audit_refusal(*, pipeline: Pipeline, user, trigger: str, reason: str, detail: dict | None = None) -> None:
    with transaction.atomic():
        audit_record(
            action="pipeline.trigger_refused",
            subject=pipeline,
            after={
                "trigger": trigger,
                "runs_as": user.get_username() if user is not None else None,
                "reason": reason,
                **(detail or {}),
            },
        )
