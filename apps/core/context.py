"""Who is acting and under which request id, for audit events written anywhere below.

Web requests set it in middleware; API token authentication refines the actor; background
tasks restore it from what the enqueuing code captured (see apps.core.tasks)."""

import contextvars
import uuid
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestContext:
    request_id: str = ""
    actor_id: int | None = None


_current: contextvars.ContextVar[RequestContext] = contextvars.ContextVar(
    "axle_request_context",
    default=RequestContext(),  # noqa: B039  (a frozen dataclass: nothing can mutate the shared default)
)


def current() -> RequestContext:
    return _current.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def set_actor(actor_id: int | None) -> None:
    ctx = _current.get()
    _current.set(RequestContext(request_id=ctx.request_id, actor_id=actor_id))


@contextmanager
def bind(*, request_id: str | None = None, actor_id: int | None = None):
    token = _current.set(RequestContext(request_id=request_id or new_request_id(), actor_id=actor_id))
    try:
        yield _current.get()
    finally:
        _current.reset(token)
