"""How code in ``apps.core`` writes an audit event without importing the audit app.

Core sits at the bottom of the layers, so it may not import ``apps.audit`` (which itself uses
core's request context). The audit app hands its recorder over in ``AuditConfig.ready``;
until then, writing an event is a configuration error, never a silent skip, because a state
change without its audit row must not happen."""

from collections.abc import Callable

from django.core.exceptions import ImproperlyConfigured

_recorder: Callable | None = None
_many_recorder: Callable | None = None


def register_recorder(recorder: Callable, many: Callable | None = None) -> None:
    global _recorder, _many_recorder
    _recorder = recorder
    _many_recorder = many


def record(**kwargs):
    if _recorder is None:
        raise ImproperlyConfigured("No audit recorder registered: is apps.audit in INSTALLED_APPS?")
    return _recorder(**kwargs)


def record_many(entries: list[dict]):
    """Many events at once (one chain append); each entry takes `record`'s arguments."""
    if _many_recorder is None:
        if _recorder is None:
            raise ImproperlyConfigured("No audit recorder registered: is apps.audit in INSTALLED_APPS?")
        return [_recorder(**entry) for entry in entries]
    return _many_recorder(entries)
