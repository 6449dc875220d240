"""Cron expressions in a time zone of the user's choosing.

django-q2 reads cron expressions with croniter too, but always in the hub's one TIME_ZONE
(``Schedule.calculate_next_run`` uses ``localtime()``), and one django-q2 Schedule per
pipeline schedule would put users' rows into the table the hub's own machinery lives in.
So the hub keeps the expression and its zone, computes each next fire time here with
croniter on an aware datetime of that zone (croniter steps over a daylight-saving gap; a
repeated hour is handled below), and one periodic task fires what is due."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import croniter
from croniter.croniter import CroniterError


class CronError(ValueError):
    """An expression or time zone the hub cannot schedule; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def zone(name: str) -> ZoneInfo:
    name = (name or "").strip()
    if not name or name not in _zones():
        raise CronError("timezone", f"{name!r} is not a time zone name such as UTC or Europe/Berlin.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError("timezone", f"{name!r} is not a time zone name such as UTC or Europe/Berlin.") from None


_ZONES: frozenset[str] | None = None


def _zones() -> frozenset[str]:
    global _ZONES
    if _ZONES is None:
        _ZONES = frozenset(available_timezones())
    return _ZONES


def check(expression: str) -> str:
    """The expression, normalised (single spaces), or CronError. Five fields only: a seconds
    field would promise more than a once-a-minute scheduler can keep."""
    text = " ".join((expression or "").split())
    fields = text.split(" ") if text else []
    if len(fields) != 5:
        raise CronError(
            "cron",
            f"A cron expression has five fields (minute hour day-of-month month day-of-week); "
            f"{text!r} has {len(fields)}.",
        )
    try:
        croniter.expand(text)
    except (CroniterError, ValueError) as exc:
        raise CronError("cron", f"{text!r} is not a valid cron expression: {exc}") from None
    return text


def next_fire(expression: str, tz_name: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``expression`` names on the clocks of
    ``tz_name``, in UTC."""
    tz = zone(tz_name)
    text = check(expression)
    it = croniter(text, after.astimezone(tz))
    fire = it.get_next(datetime)
    # When the clocks go back an hour, 02:30 happens twice. A job at a fixed hour runs at the
    # first 02:30 only, as cron does; one whose hour field is a wildcard runs every hour.
    if "*" not in text.split(" ")[1] and _second_of_a_repeated_time(fire, tz):
        fire = it.get_next(datetime)
    return fire.astimezone(UTC)


def _second_of_a_repeated_time(moment: datetime, tz: ZoneInfo) -> bool:
    wall = moment.astimezone(tz).replace(tzinfo=None)
    first, second = wall.replace(tzinfo=tz, fold=0), wall.replace(tzinfo=tz, fold=1)
    return first.utcoffset() != second.utcoffset() and moment.astimezone(UTC) == second.astimezone(UTC)


def next_fires(expression: str, tz_name: str, after: datetime, count: int) -> list[datetime]:
    out, t = [], after
    for _ in range(count):
        t = next_fire(expression, tz_name, t)
        out.append(t)
    return out
