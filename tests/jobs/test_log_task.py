"""The array task index of a log request is an index, never a path fragment: it is put into the
log file's name, so `../…` there would read another file as the user's cluster account."""

import pytest

from apps.core.errors import ValidationFailed
from apps.jobs import selectors
from tests.registry.conftest import make_job


@pytest.mark.django_db
@pytest.mark.parametrize("task", ["../../../etc/hostname", "0/../../x", "-1", "1e3", " 1"])
def test_it_refuses_a_task_that_is_not_an_index(alice, team, task):
    job = make_job(alice, team=team, slurm_job_id="42")
    with pytest.raises(ValidationFailed, match="array task index"):
        selectors.job_log_read(job=job, stream="stdout", task=task)


@pytest.mark.django_db
def test_the_api_answers_400_for_such_a_task(api, alice, team):
    job = make_job(alice, team=team, slurm_job_id="42")
    api.force_authenticate(alice)
    response = api.get(f"/api/v1/jobs/{job.uuid}/logs/", {"task": "../../etc/hostname"})
    assert response.status_code == 400 and "task" in response.json()


@pytest.mark.django_db
def test_a_whole_number_task_is_read_as_before(alice, team):
    job = make_job(alice, team=team)  # not on Slurm yet: nothing to read, and no cluster is asked
    chunk = selectors.job_log_read(job=job, stream="stdout", task="3")
    assert chunk.missing and "not reached Slurm" in chunk.message
