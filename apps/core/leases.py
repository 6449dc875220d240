import logging
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from .models import Lease


def acquire_lease(name: str, duration: timedelta) -> bool:
    """Take the lease ``name`` unless someone holds it; compare-and-swap, no waiting."""
    now = timezone.now()
    if Lease.objects.filter(name=name, held_until__lt=now).update(held_until=now + duration):
        return True
    try:
        with transaction.atomic():
            Lease.objects.create(name=name, held_until=now + duration)
        return True
    except IntegrityError:
        return False


def release_lease(name: str) -> None:
    Lease.objects.filter(name=name).update(held_until=timezone.now())


def _advisory_key(name: str) -> tuple[int, int]:
    kind, _, key = name.partition(":")
    # Two signed 32-bit halves: the kind's checksum and the id (or the key's checksum).
    return zlib.crc32(kind.encode()) - 2**31, (int(key) if key.isdigit() else zlib.crc32(key.encode())) - 2**31


@contextmanager
def work_lease(name: str, *, fallback: timedelta = timedelta(seconds=90)) -> Iterator[bool]:
    """Hold ``name`` ("job:42", "jobs-track") while the block runs; yields False, without
    waiting, when another process holds it. "Is the work on this job in flight?" is "can I take
    its lease?".

    On PostgreSQL it is a session advisory lock, held by the database connection and not by a
    transaction (so no transaction stays open while the cluster is called): a worker killed with
    SIGKILL loses its connection and with it the lock, at once, so the periodic re-drive can
    take over its work within seconds instead of waiting for a timeout. Elsewhere (SQLite, one
    machine) it is a `Lease` row that expires after ``fallback``; the compare-and-swap state
    transitions keep work safe either way, the lease only says who should do it now."""
    if connection.vendor == "postgresql":
        high, low = _advisory_key(name)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [high, low])
            taken = cursor.fetchone()[0]
        try:
            yield taken
        finally:
            if taken:
                try:
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [high, low])
                except Exception:
                    # A broken connection holds nothing any more once closed.
                    connection.close()
        return
    taken = acquire_lease(name, fallback)
    try:
        yield taken
    finally:
        if taken:
            Lease.objects.filter(name=name).delete()


@contextmanager
def work_leases(names: list[str]) -> Iterator[set[str]]:
    """`work_lease` for many names at once: yields the set of those taken (the others another
    process holds), all released at the end. On PostgreSQL one statement takes them all and
    one releases them (a batch of jobs: two round trips, not two per job)."""
    if not names:
        yield set()
        return
    if connection.vendor != "postgresql":
        with ExitStack() as stack:
            yield {name for name in names if stack.enter_context(work_lease(name))}
        return
    keys = [_advisory_key(name) for name in names]
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT t.i, pg_try_advisory_lock(t.h, t.l) FROM unnest(%s::int4[], %s::int4[]) "
                "WITH ORDINALITY AS t(h, l, i) ORDER BY t.i",
                [[h for h, _ in keys], [low for _, low in keys]],
            )
            taken = [names[i - 1] for i, ok in cursor.fetchall() if ok]
    except Exception:
        # Cut off part-way (a timeout, a cancel): the locks it took are unknown; the session
        # that holds them goes, and they with it.
        connection.close()
        raise
    try:
        yield set(taken)
    finally:
        if taken:
            held = [_advisory_key(name) for name in taken]
            try:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_advisory_unlock(t.h, t.l) FROM unnest(%s::int4[], %s::int4[]) AS t(h, l)",
                        [[h for h, _ in held], [low for _, low in held]],
                    )
            except Exception:
                # A broken connection holds nothing any more once closed.
                connection.close()


def leased_loop(
    name: str,
    tick: Callable[[], object],
    *,
    seconds: float,
    interval: float,
    then: str | None = None,
    log: logging.Logger | None = None,
) -> str:
    """Run ``tick`` every ``interval`` seconds for about ``seconds``, holding the work lease
    ``name`` throughout, so two loops never overlap; on PostgreSQL the lease dies with a killed
    worker's connection, so the next loop starts at once instead of when a timed lease would
    have expired. ``then``, a task path, is queued when the loop ends, so no gap opens between
    one loop and the next (the minutely schedule stays as the backstop)."""
    from django_q.conf import Conf
    from django_q.tasks import async_task

    log = log or logging.getLogger(__name__)
    deadline = time.monotonic() + seconds
    with work_lease(name, fallback=timedelta(seconds=seconds + 10)) as mine:
        if not mine:
            return "another tracker holds the lease"
        while time.monotonic() < deadline:
            try:
                tick()
            except Exception:  # one bad cycle must not end tracking for the minute
                log.exception("%s: cycle failed", name)
            # Not close_if_unusable_or_obsolete: closing the connection would drop the loop's
            # own lease (an advisory lock on it) in the middle of the minute.
            conn = transaction.get_connection()
            if conn.connection is not None and not conn.is_usable():
                conn.close()
                return "the database connection broke; the next loop takes over"
            time.sleep(interval)
    if then and not Conf.SYNC:  # inline tasks (tests) would chain loops forever
        async_task(then)
    return "done"
