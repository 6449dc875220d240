"""The registry learns that a job finished from the jobs app's job_finalized signal; jobs no
longer names a registry task (it may not import the registry, which sits above it)."""

import pytest

from apps.jobs import services as job_services
from apps.jobs.models import Job
from apps.registry import services as registry_services
from tests.registry.conftest import make_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def registrations(monkeypatch):
    asked = []
    monkeypatch.setattr(registry_services, "model_version_register_from_job", lambda job_id: asked.append(job_id))
    return asked


def test_a_finalized_job_that_asked_for_a_model_queues_its_registration(
    alice, team, registrations, django_capture_on_commit_callbacks
):
    job = make_job(alice, team=team, register_model_as="digits")
    with django_capture_on_commit_callbacks(execute=True):
        job_services.job_finalize(job_id=job.pk)
    assert registrations == [job.pk]


@pytest.mark.parametrize(
    ("status", "register_as"), [(Job.Status.COMPLETED, ""), (Job.Status.FAILED, "digits")], ids=["unasked", "failed"]
)
def test_other_finalized_jobs_queue_nothing(
    alice, team, registrations, django_capture_on_commit_callbacks, status, register_as
):
    job = make_job(alice, team=team, status=status, register_model_as=register_as)
    with django_capture_on_commit_callbacks(execute=True):
        job_services.job_finalize(job_id=job.pk)
    assert registrations == []


def test_finalizing_twice_queues_once(alice, team, registrations, django_capture_on_commit_callbacks):
    job = make_job(alice, team=team, register_model_as="digits")
    with django_capture_on_commit_callbacks(execute=True):
        job_services.job_finalize(job_id=job.pk)
        job_services.job_finalize(job_id=job.pk)
    assert registrations == [job.pk]
