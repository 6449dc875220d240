"""Enqueue background work that remembers who asked and under which request id."""

from django.db import transaction
from django.utils.module_loading import import_string
from django_q.conf import Conf
from django_q.tasks import async_task

from . import context


def enqueue(func_path: str, *args, **kwargs) -> None:
    """Queue ``func_path(*args, **kwargs)`` once the current transaction commits.

    With the database as the broker (no AXLE_REDIS_URL) and inside a transaction, the task's
    row is written in that transaction: it commits with the work that queued it, or not at all,
    which is what "once it commits" means, in one statement and with no reconnection (the
    broker's own write outside a transaction closes the connection first, when
    CONN_MAX_AGE is 0: a new PostgreSQL connection per queued task). Otherwise (Redis, tasks
    run inline in tests, no transaction open) the task is sent when the transaction commits.

    Tasks take ids, never model instances, and must be safe to run twice."""
    ctx = context.current()

    def _send():
        async_task("apps.core.tasks.run_in_context", func_path, ctx.request_id, ctx.actor_id, args, kwargs)

    if _broker_in_database() and not transaction.get_autocommit(using=Conf.ORM):
        _send()
    else:
        transaction.on_commit(_send)


def _broker_in_database() -> bool:
    return bool(Conf.ORM) and not Conf.SYNC and Conf.ORM == "default"


def run_in_context(func_path: str, request_id: str, actor_id: int | None, args, kwargs):
    func = import_string(func_path)
    with context.bind(request_id=request_id, actor_id=actor_id):
        return func(*args, **kwargs)
