"""Hub-wide changes: the hub's background machinery (django-q2 schedules, queued and finished
tasks), audited like every other change since a schedule names a function the workers will
run; and re-encrypting every stored secret with the newest key."""

from django.db import transaction
from django_q.models import OrmQ, Schedule, Task
from django_q.tasks import async_task

from apps.audit.services import audit_record
from apps.clusters.models import Cluster, ClusterGrant
from apps.core import crypto

SCHEDULE_FIELDS = (
    "name",
    "func",
    "hook",
    "args",
    "kwargs",
    "schedule_type",
    "minutes",
    "repeats",
    "next_run",
    "cron",
    "cluster",
    "intended_date_kwarg",
)


def _snapshot(schedule: Schedule) -> dict:
    return {f: getattr(schedule, f) for f in SCHEDULE_FIELDS}


def _subject(schedule: Schedule) -> dict:
    return {"subject_type": "django_q.schedule", "subject_id": str(schedule.pk), "subject_text": schedule.name or ""}


def schedule_save(*, schedule: Schedule, actor, **fields) -> Schedule:
    """Create (an unsaved ``schedule``) or change a schedule; audited with what changed."""
    created = schedule.pk is None
    with transaction.atomic():
        before = {} if created else _snapshot(Schedule.objects.select_for_update().get(pk=schedule.pk))
        for name, value in fields.items():
            setattr(schedule, name, value)
        schedule.save()
        after = _snapshot(schedule)
        changed = [k for k in after if created or before.get(k) != after[k]]
        if changed:
            audit_record(
                action="schedule.created" if created else "schedule.updated",
                actor=actor,
                before=None if created else {k: before[k] for k in changed},
                after={k: after[k] for k in changed},
                **_subject(schedule),
            )
    return schedule


def schedule_delete(*, schedule: Schedule, actor) -> None:
    with transaction.atomic():
        audit_record(action="schedule.deleted", actor=actor, before=_snapshot(schedule), **_subject(schedule))
        schedule.delete()


def task_result_delete(*, task: Task, actor) -> None:
    """Forget a finished task's record (its result or its failure)."""
    with transaction.atomic():
        audit_record(
            action="task.deleted",
            subject_type="django_q.task",
            subject_id=str(task.id),
            subject_text=task.name or "",
            actor=actor,
            before={"func": task.func, "success": task.success, "started": task.started, "stopped": task.stopped},
        )
        task.delete()


def task_resubmit(*, task: Task, actor) -> None:
    """Queue a finished task's function again with the same arguments; a failure's record goes."""
    with transaction.atomic():
        audit_record(
            action="task.resubmitted",
            subject_type="django_q.task",
            subject_id=str(task.id),
            subject_text=task.name or "",
            actor=actor,
            after={"func": task.func, "was_success": task.success},
        )
        if not task.success:
            task.delete()
    # Outside the transaction: in sync mode (tests) the task runs right here and may reach a cluster.
    async_task(
        task.func, *(task.args or ()), hook=task.hook, group=task.group, cluster=task.cluster, **(task.kwargs or {})
    )


def queued_task_delete(*, queued: OrmQ, actor) -> None:
    """Drop a task that waits in the queue, so no worker runs it."""
    with transaction.atomic():
        audit_record(
            action="task.dequeued",
            subject_type="django_q.ormq",
            subject_id=str(queued.pk),
            subject_text=queued.key,
            actor=actor,
            before={"func": queued.func(), "name": queued.name()},
        )
        queued.delete()


def secrets_rotate() -> int:
    """Re-encrypt every stored secret with the newest key; return how many were rewritten."""
    count = 0
    with transaction.atomic():
        for cluster in Cluster.objects.select_for_update().exclude(jwt_key_encrypted=""):
            cluster.jwt_key_encrypted = crypto.rotate(cluster.jwt_key_encrypted)
            cluster.save(update_fields=["jwt_key_encrypted"])
            count += 1
        for grant in ClusterGrant.objects.select_for_update():
            changed = []
            for field in ("ssh_private_key_encrypted", "rest_token_encrypted"):
                if getattr(grant, field):
                    setattr(grant, field, crypto.rotate(getattr(grant, field)))
                    changed.append(field)
            if changed:
                grant.save(update_fields=changed)
                count += len(changed)
        audit_record(action="secrets.rotated", after={"count": count})
    return count
