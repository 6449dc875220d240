"""The transition helper lives in core, below the audit app, and reaches it only through the
recorder the audit app registers: a state change is never made without its event."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from apps.audit.models import AuditEvent
from apps.audit.services import audit_record
from apps.core import audit_hook
from apps.core.transitions import transition
from apps.jobs.models import Job
from tests.registry.conftest import make_job

pytestmark = pytest.mark.django_db


def test_the_audit_app_registers_its_recorder_at_start():
    assert audit_hook._recorder is audit_record


def test_a_transition_writes_its_audit_event(alice):
    job = make_job(alice, status=Job.Status.QUEUED)
    transition(obj=job, to=Job.Status.CANCELLED, transitions=Job.TRANSITIONS, action="job.cancelled", actor=alice)
    event = AuditEvent.objects.get(action="job.cancelled")
    assert (event.before, event.after, event.actor) == ({"status": "queued"}, {"status": "cancelled"}, alice)


def test_without_a_recorder_a_transition_refuses_and_changes_nothing(alice, monkeypatch):
    job = make_job(alice, status=Job.Status.QUEUED)
    monkeypatch.setattr(audit_hook, "_recorder", None)
    with pytest.raises(ImproperlyConfigured, match="No audit recorder"):
        transition(obj=job, to=Job.Status.CANCELLED, transitions=Job.TRANSITIONS, action="job.cancelled")
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED
