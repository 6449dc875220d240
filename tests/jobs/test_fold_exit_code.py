"""An array's exit code from its tasks' (apps.jobs.services.fold)."""

from datetime import UTC, datetime

import pytest

from apps.integrations.slurm.base import JobInfo
from apps.jobs.models import Job
from apps.jobs.services.fold import apply_infos
from tests.registry.conftest import make_job

END = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def task(n: int, state: str, exit_code: int | None) -> JobInfo:
    return JobInfo(
        job_id=str(100 + n), array_job_id="100", array_task_id=str(n), state=state, exit_code=exit_code, end_time=END
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        ([task(0, "COMPLETED", 0), task(1, "FAILED", 3)], 3),
        # slurmrestd 22.05 knows no failed task's code: the array's is unknown, never "0"
        ([task(0, "COMPLETED", 0), task(1, "FAILED", None)], None),
        ([task(0, "COMPLETED", 0), task(1, "COMPLETED", 0)], 0),
    ],
)
def test_an_arrays_exit_code_is_never_0_when_a_failed_tasks_code_is_unknown(alice, team, tasks, expected):
    job = make_job(alice, team=team, status=Job.Status.RUNNING, slurm_job_id="100", effective_request={"array": "0-1"})
    apply_infos(job, tasks, final=True)
    job.refresh_from_db()
    assert job.status in Job.TERMINAL and job.exit_code == expected
