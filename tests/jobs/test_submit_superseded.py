"""A submission whose inputs took longer to resolve than the stuck cutoff must not reach sbatch."""

from contextlib import contextmanager

import pytest

from apps.integrations.slurm.base import NoClusterFiles
from apps.jobs import services, tracking
from apps.jobs.models import Job
from apps.jobs.services import submit as submitting
from tests.registry.conftest import make_job

S = Job.Status


class RecordingClient:
    submitted: list = []
    files = NoClusterFiles("A client that records submissions")

    def submit(self, request):
        self.submitted.append(request)
        return "4242"


@pytest.mark.django_db
def test_it_does_not_sbatch_a_job_taken_for_stuck_while_its_inputs_were_resolved(alice, monkeypatch):
    job = make_job(alice, status=S.QUEUED)
    RecordingClient.submitted = []

    @contextmanager
    def fake_client(grant):
        yield RecordingClient()

    def slow_environment(j, experiment_id, run_id, login=tracking.OWN_LOGIN):
        # Meanwhile the periodic tick took the job for one a dead worker left submitting.
        Job.objects.filter(pk=j.pk).update(status=S.UNKNOWN)
        return {"MLFLOW_EXPERIMENT_ID": experiment_id}

    monkeypatch.setattr(submitting, "slurm_client", fake_client)
    monkeypatch.setattr(tracking, "hub_experiment_id", lambda j, tracking=None: "1")
    monkeypatch.setattr(tracking, "job_environment", slow_environment)
    result = services.job_submit(job_id=job.pk)
    assert RecordingClient.submitted == []
    assert result.status == S.UNKNOWN and result.slurm_job_id == ""
