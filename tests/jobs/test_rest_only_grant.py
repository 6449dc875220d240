"""A grant that reaches its cluster through slurmrestd only (no SSH key) has no way to the
cluster's files: what needs them says so in one sentence, never with a stack trace."""

import base64

import pytest

from apps.clusters.models import Cluster
from apps.core import crypto
from apps.core.errors import Unavailable
from apps.jobs import selectors, services
from apps.jobs.models import Job
from tests.factories import ClusterFactory, ClusterGrantFactory
from tests.registry.conftest import make_job

pytestmark = pytest.mark.django_db

WHAT_IS_MISSING = (
    "slurmrestd has no file API, so files on the cluster are reached over SSH on its login node. An administrator "
    "must add an SSH key to the grant (and a login host with a confirmed host key to the cluster)."
)


@pytest.fixture
def rest_only_grant(alice):
    cluster = ClusterFactory(
        name="rest-hpc",
        transport=Cluster.Transport.REST,
        jwt_key_encrypted=crypto.encrypt(base64.b64encode(b"k" * 32).decode()),
    )
    return ClusterGrantFactory(user=alice, cluster=cluster)


def test_its_job_log_is_unavailable_with_a_sentence_saying_what_the_grant_lacks(alice, rest_only_grant):
    job = make_job(alice, grant=rest_only_grant, status=Job.Status.RUNNING, slurm_job_id="77")
    with pytest.raises(Unavailable) as caught:
        selectors.job_log_read(job=job, stream="stdout")
    assert caught.value.message == f"A REST-only grant (alice on cluster rest-hpc) cannot read {job.stdout_path}: " + (
        WHAT_IS_MISSING
    )


def test_its_file_store_is_skipped_while_the_job_runs(alice, rest_only_grant):
    job = make_job(
        alice,
        grant=rest_only_grant,
        status=Job.Status.RUNNING,
        slurm_job_id="78",
        tracking_mode=Cluster.TrackingMode.FILE,
        mlflow_experiment_id="1",
        mlflow_run_id="0123456789abcdef",
    )
    assert services.job_sync_tracking(job_id=job.pk) == 0
    job.refresh_from_db()
    assert job.import_state == {}
