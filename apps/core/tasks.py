"""Enqueue background work that remembers who asked and under which request id."""

from django.db import transaction
from django.utils.module_loading import import_string
from django_q.tasks import async_task

from . import context


def enqueue(func_path: str, *args, **kwargs) -> None:
    """Queue ``func_path(*args, **kwargs)`` once the current transaction commits.

    Tasks take ids, never model instances, and must be safe to run twice."""
    ctx = context.current()

    def _send():
        async_task("apps.core.tasks.run_in_context", func_path, ctx.request_id, ctx.actor_id, args, kwargs)

    transaction.on_commit(_send)


def run_in_context(func_path: str, request_id: str, actor_id: int | None, args, kwargs):
    func = import_string(func_path)
    with context.bind(request_id=request_id, actor_id=actor_id):
        return func(*args, **kwargs)
