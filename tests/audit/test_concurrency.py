import threading

import pytest
from django.db import connections, transaction

from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_verify
from apps.audit.services import audit_record


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_keep_one_chain():
    threads, per_thread, errors = 6, 15, []

    def writer(n):
        try:
            for i in range(per_thread):
                with transaction.atomic():
                    audit_record(action="thing.concurrent", subject_text=f"writer {n}", after={"i": i})
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    result = audit_verify()
    assert result.ok, result.problem
    assert AuditEvent.objects.filter(action="thing.concurrent").count() == threads * per_thread
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
