import zlib
from collections.abc import Iterator
from contextlib import contextmanager
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
