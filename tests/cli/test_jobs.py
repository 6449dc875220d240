"""The main journey from a terminal, on the real local cluster: log in, submit with a
parameter and follow the output until the job completes, list it, see its status, read its
logs; cancel a running job; a refused script is told by line with exit 5, and an unknown
cluster with the names you may use and exit 4."""

import json

import pytest

from apps.jobs import services as job_services
from apps.jobs.models import Job
from tests.factories import ClusterFactory, ClusterGrantFactory
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant

from .conftest import drive

HELLO = """#!/bin/bash
#SBATCH --partition=debug
#SBATCH --time=00:02:00
#SBATCH --mem=100M
echo "hello $GREETING"
for i in 1 2 3; do echo "step $i"; sleep 1; done
echo "a warning" >&2
"""

LONG = """#!/bin/bash
#SBATCH --partition=debug
#SBATCH --time=00:05:00
#SBATCH --mem=100M
echo started
sleep 240
"""


@pytest.fixture
def local_grant(transactional_db, alice):
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    cluster = make_local_cluster("ssh", "local-ssh")
    return make_local_grant(cluster, alice, "scientist", max_cpus=2, max_time_minutes=30)


@pytest.mark.slurm
@pytest.mark.slow
def test_a_scientist_submits_follows_and_inspects_a_job_from_the_terminal(axle_for, alice, local_grant, tmp_path):
    axle = axle_for(alice)
    script = tmp_path / "hello.sh"
    script.write_text(HELLO)

    proc = axle.start("submit", str(script), "-c", "local-ssh", "-p", "GREETING=axle", "--follow")
    code, out, err = drive(proc, job_services.jobs_poll)

    assert code == 0, err
    # Every line once, in order: the log is followed by offset, never read twice.
    assert out == "hello axle\nstep 1\nstep 2\nstep 3\n"
    assert "a warning" in err and " running" in err and " completed" in err
    job = Job.objects.get()
    assert (job.name, job.status, job.parameters) == ("hello", Job.Status.COMPLETED, {"GREETING": "axle"})

    listed = axle("jobs", "--json")
    assert [j["id"] for j in json.loads(listed.stdout)] == [str(job.uuid)]
    table = axle("jobs").stdout
    assert str(job.uuid)[:8] in table and "completed" in table and job.slurm_job_id in table

    status = axle("status", str(job.uuid)[:8], "--json")
    body = json.loads(status.stdout)
    assert (body["status"], body["exit_code"], body["parameters"]) == ("completed", 0, {"GREETING": "axle"})
    assert "completed" in axle("status", job.slurm_job_id).stdout  # a Slurm job id finds it too

    logs = axle("logs", str(job.uuid))
    assert logs.returncode == 0 and logs.stdout == out and "a warning" in logs.stderr


@pytest.mark.slurm
@pytest.mark.slow
def test_a_running_job_is_cancelled_and_following_it_then_exits_1(axle_for, alice, local_grant, tmp_path):
    axle = axle_for(alice)
    script = tmp_path / "long.sh"
    script.write_text(LONG)
    submitted = axle("submit", str(script), "-c", "local-ssh", "--json")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]

    cancelled = axle("cancel", job_id[:8])
    assert cancelled.returncode == 0, cancelled.stderr
    proc = axle.start("logs", "-f", job_id)
    code, out, err = drive(proc, job_services.jobs_poll)
    assert code == 1 and "ended cancelled" in err
    assert Job.objects.get(uuid=job_id).status == Job.Status.CANCELLED
    assert json.loads(axle("status", job_id, "--json").stdout)["status"] == "cancelled"

    again = axle("cancel", job_id)
    assert again.returncode == 7 and "already ended" in again.stderr


@pytest.mark.slurm
@pytest.mark.slow
def test_waiting_for_a_job_that_fails_exits_1_with_its_exit_code(axle_for, alice, local_grant, tmp_path):
    axle = axle_for(alice)
    script = tmp_path / "fails.sh"
    script.write_text("#!/bin/bash\n#SBATCH --partition=debug\n#SBATCH --time=00:01:00\necho trying\nexit 3\n")
    proc = axle.start("submit", str(script), "-c", "local-ssh", "--wait", "--json")
    code, out, err = drive(proc, job_services.jobs_poll)
    assert code == 1 and "ended failed (exit code 3)" in err
    assert json.loads(out)["status"] == "failed"


@pytest.fixture
def grant(transactional_db, alice):
    """A grant on a cluster that is never reached: these scripts are refused before Slurm."""
    return ClusterGrantFactory(
        user=alice, cluster=ClusterFactory(name="hpc"), cluster_username="alice01", allowed_partitions=["debug"]
    )


@pytest.mark.slow
def test_a_refused_script_shows_its_problems_by_line_and_exits_5(axle_for, alice, grant, tmp_path):
    axle = axle_for(alice)
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n#SBATCH --partition=batch\n#SBATCH --gres=gpu:8\necho hi\n")

    result = axle("submit", str(script), "-c", "hpc")
    assert result.returncode == 5
    assert f"{script}:2: " in result.stderr and "partition 'batch'" in result.stderr
    assert f"{script}:3: " in result.stderr
    assert not Job.objects.exists()

    check = axle("submit", str(script), "-c", "hpc", "--check", "--json")
    assert check.returncode == 5 and json.loads(check.stdout)["ok"] is False


@pytest.mark.slow
def test_an_unknown_cluster_exits_4_and_names_the_clusters_you_may_use(axle_for, alice, grant, tmp_path):
    axle = axle_for(alice)
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n#SBATCH --partition=debug\necho hi\n")
    result = axle("submit", str(script), "-c", "nowhere")
    assert result.returncode == 4
    assert "No cluster 'nowhere'" in result.stderr and "hpc" in result.stderr
    bad = axle("submit", str(script), "-c", "hpc", "-p", "LR")
    assert bad.returncode == 2 and "NAME=VALUE" in bad.stderr
    missing = axle("status", "0123abcd")
    assert missing.returncode == 4 and "No job '0123abcd'" in missing.stderr
