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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from apps.accounts.teams import team_member_require
from apps.audit.services import audit_record
from apps.core import crypto
from apps.core.errors import ApplicationError, Conflict, NotFound, Unavailable, ValidationFailed
from apps.core.tasks import enqueue
from apps.pipelines.models import Pipeline, PipelineRun
from apps.pipelines.services import pipeline_run_start

from . import cron, forges, gitremote
from .models import PipelineSchedule, TriggerSettings, WebhookDelivery

log = logging.getLogger(__name__)

MIN_POLL_MINUTES, MAX_POLL_MINUTES = 1, 24 * 60
MAX_SCHEDULES = 20
MAX_DELIVERY_ATTEMPTS = 5
DELIVERY_RETRY_SECONDS = 60


def _start_run(
    *, pipeline: Pipeline, trigger: str, commit: str, delivery_id: str = "", detail: dict, unless_active: bool = False
) -> PipelineRun:
    """Start a run through the pipelines app, which talks to the cluster (it reads the file at
    the commit): never call this inside a transaction."""
    return pipeline_run_start(
        pipeline=pipeline,
        actor=None,
        trigger=trigger,
        commit=commit,
        delivery_id=delivery_id,
        trigger_detail=detail,
        unless_active=unless_active,
    )


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
    secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        row = settings_for(pipeline, lock=True)
        replaced = row.has_webhook
        row.webhook_secret_encrypted = crypto.encrypt(secret)
        row.webhook_secret_set_at = timezone.now()
        row.save(update_fields=["webhook_secret_encrypted", "webhook_secret_set_at", "updated_at"])
        audit_record(
            action="pipeline.webhook_secret_rotated" if replaced else "pipeline.webhook_secret_created",
            subject=pipeline,
            actor=user,
            after={"set_at": row.webhook_secret_set_at},
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


def polling_set(*, user, pipeline: Pipeline, enabled: bool, interval_minutes: int | None = None) -> TriggerSettings:
    """Turn polling on or off. Turning it on forgets the head seen before: the first poll
    notes the branch's head and starts nothing, every later new head starts one run."""
    team_member_require(user=user, team=pipeline.team)
    if interval_minutes is not None and not MIN_POLL_MINUTES <= interval_minutes <= MAX_POLL_MINUTES:
        raise ValidationFailed(
            f"interval_minutes: poll every {MIN_POLL_MINUTES} to {MAX_POLL_MINUTES} minutes.",
            extra={"problems": [{"path": "interval_minutes", "message": "out of range"}]},
        )
    with transaction.atomic():
        row = settings_for(pipeline, lock=True)
        before = {"enabled": row.polling_enabled, "interval_minutes": row.poll_interval_minutes}
        if interval_minutes is not None:
            row.poll_interval_minutes = interval_minutes
        if enabled and not row.polling_enabled:
            row.last_seen_commit, row.last_poll_error, row.poll_next_at = "", "", timezone.now()
        row.polling_enabled = enabled
        if not enabled:
            row.poll_next_at = None
        row.save()
        after = {"enabled": row.polling_enabled, "interval_minutes": row.poll_interval_minutes}
        if after != before:
            audit_record(action="pipeline.polling_changed", subject=pipeline, actor=user, before=before, after=after)
    return row


def schedule_create(
    *, user, pipeline: Pipeline, cron_expression: str, tz_name: str = "UTC", allow_concurrent: bool = False
) -> PipelineSchedule:
    team_member_require(user=user, team=pipeline.team)
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


def webhook_delivery_start(*, delivery_id: int) -> PipelineRun | None:
    """Start the run a queued delivery asked for, once: the delivery is claimed (queued →
    starting) before the run starts, so a task that runs twice starts one run. A cluster that
    cannot be reached puts it back in the queue; the triggers' periodic task tries again."""
    claimed = WebhookDelivery.objects.filter(pk=delivery_id, outcome=WebhookDelivery.Outcome.QUEUED).update(
        outcome=WebhookDelivery.Outcome.STARTING, attempts=F("attempts") + 1
    )
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("pipeline__grant__cluster", "pipeline__owner").get(pk=delivery_id)
    try:
        run = _start_run(
            pipeline=delivery.pipeline,
            trigger=PipelineRun.Trigger.PUSH,
            commit=delivery.commit,
            delivery_id=delivery.delivery_id,
            detail={"forge": delivery.forge, "delivery_id": delivery.delivery_id, "ref": delivery.ref},
        )
    except Unavailable as exc:
        again = delivery.attempts < MAX_DELIVERY_ATTEMPTS
        WebhookDelivery.objects.filter(pk=delivery_id).update(
            outcome=WebhookDelivery.Outcome.QUEUED if again else WebhookDelivery.Outcome.FAILED,
            message=exc.message + (" Trying again shortly." if again else ""),
        )
        return None
    except ApplicationError as exc:
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


def polls_due(*, now: datetime | None = None) -> int:
    """Poll every repository with a pipeline due for it: one ``git ls-remote`` per repository and
    grant, whatever the number of pipelines that follow it. Returns the number of calls made."""
    now = now or timezone.now()
    due = list(
        TriggerSettings.objects.filter(polling_enabled=True, poll_next_at__lte=now)
        .select_related("pipeline__grant__cluster")
        .order_by("pk")
    )
    groups: dict[tuple[int, str], list[TriggerSettings]] = {}
    for row in due:
        groups.setdefault((row.pipeline.grant_id, row.pipeline.repo_url), []).append(row)
    calls = 0
    for (_grant_id, repo), rows in groups.items():
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
        grant = claimed[0].pipeline.grant
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
    # The head seen last is compared and replaced in one statement: a new commit is taken by
    # exactly one poll, which alone starts its run.
    taken = TriggerSettings.objects.filter(pk=row.pk, last_seen_commit=row.last_seen_commit).update(
        last_seen_commit=head, last_polled_at=now, last_poll_error=""
    )
    if not taken or not row.last_seen_commit or row.last_seen_commit == head:
        return None
    try:
        return _start_run(
            pipeline=row.pipeline,
            trigger=PipelineRun.Trigger.POLL,
            commit=head,
            detail={"previous": row.last_seen_commit, "polled_at": now.isoformat()},
        )
    except Unavailable as exc:
        # Give the commit back, so the next poll takes it again.
        TriggerSettings.objects.filter(pk=row.pk, last_seen_commit=head).update(
            last_seen_commit=row.last_seen_commit, last_poll_error=f"no run started for {head[:12]} yet: {exc.message}"
        )
    except ApplicationError as exc:
        # Seen all the same: a commit gets one attempt, not one per poll.
        TriggerSettings.objects.filter(pk=row.pk).update(
            last_poll_error=f"no run started for {head[:12]}: {exc.message}"
        )
    return None


# ---- schedules -------------------------------------------------------------------------------


def schedules_due(*, now: datetime | None = None) -> list[PipelineSchedule]:
    """Fire every enabled schedule whose time has come, each once however many of its times
    passed meanwhile (a hub that was down does not catch up with a burst of runs)."""
    now = now or timezone.now()
    fired = []
    due = PipelineSchedule.objects.filter(enabled=True, next_fire_at__lte=now).select_related(
        "pipeline__grant__cluster"
    )
    for schedule in due.order_by("next_fire_at"):
        try:
            following = cron.next_fire(schedule.cron, schedule.timezone, now)
        except cron.CronError as exc:
            PipelineSchedule.objects.filter(pk=schedule.pk).update(enabled=False, last_outcome=exc.message)
            continue
        # The claim: only the worker that moves next_fire_at on from the value it read fires.
        if not PipelineSchedule.objects.filter(pk=schedule.pk, next_fire_at=schedule.next_fire_at).update(
            next_fire_at=following, last_fired_at=now
        ):
            continue
        _schedule_fire(schedule=schedule, now=now)
        fired.append(schedule)
    return fired


def _schedule_fire(*, schedule: PipelineSchedule, now: datetime) -> PipelineRun | None:
    pipeline = schedule.pipeline
    try:
        commit = gitremote.branch_heads(grant=pipeline.grant, repo=pipeline.repo_url, branches=[pipeline.branch]).get(
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
    detail = {
        "schedule": str(schedule.uuid),
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "due_at": schedule.next_fire_at.isoformat() if schedule.next_fire_at else None,
    }
    if not schedule.allow_concurrent:
        # Checked here to spare the cluster a read, and again under the pipeline's lock when
        # the run is recorded (unless_active), where a concurrent start cannot slip through.
        active = _active_run(pipeline, commit)
        if active is not None:
            _outcome(schedule, f"skipped: run #{active.number} of {commit[:12]} is still {active.status}.")
            return None
    try:
        run = _start_run(
            pipeline=pipeline,
            trigger=PipelineRun.Trigger.SCHEDULE,
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
