"""The contract every Slurm transport keeps, checked against the real local cluster
(compose/local) through SSH and through slurmrestd alike."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable

import pytest

from apps.integrations.slurm.base import (
    HostKeyError,
    SlurmClient,
    SlurmRejected,
    SubmitRequest,
)
from apps.integrations.slurm.parsing import parse_duration, parse_scontrol_oneliner
from apps.integrations.slurm.request import effective_request
from apps.integrations.slurm.rest import RestClient
from apps.integrations.slurm.sbatch import parse_array, parse_memory_mb
from apps.integrations.slurm.ssh import SSHClient

from .conftest import USER, wait_for

pytestmark = pytest.mark.slurm

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}


def request(script: str, scratch: str, marker: str, *extra: str, name: str = "contract") -> SubmitRequest:
    return SubmitRequest(
        script=script,
        job_name=name,
        comment=marker,
        workdir=scratch,
        env={"TEST_PARAM": "a,b=c d"},
        extra_args=[
            f"--output={scratch}/%x-%j.out",
            f"--error={scratch}/%x-%j.err",
            *extra,
        ],
    )


def finished(slurm: SlurmClient, job_id: str, count: int = 1) -> list:
    return wait_for(
        lambda: slurm.accounting([job_id]),
        lambda jobs: len(jobs) >= count and all(j.state in TERMINAL for j in jobs),
    )


HELLO = """#!/bin/bash
#SBATCH --time=2
#SBATCH --ntasks=1
echo "line one"
echo "param=$TEST_PARAM"
echo "line three" >&2
"""


def test_it_submits_a_job_and_sees_it_in_the_queue(slurm: SlurmClient, scratch: str, marker: str) -> None:
    job_id = slurm.submit(request("#!/bin/bash\nsleep 20\n", scratch, marker))
    try:
        queued = {j.job_id: j for j in slurm.queue(USER)}
        assert job_id in queued
        assert queued[job_id].comment == marker
        assert queued[job_id].state in {"PENDING", "RUNNING", "CONFIGURING"}
    finally:
        slurm.cancel(job_id)


def test_it_tracks_a_job_to_completion_and_reads_its_log_in_two_chunks(
    slurm: SlurmClient, scratch: str, marker: str
) -> None:
    job_id = slurm.submit(request(HELLO, scratch, marker))
    [job] = finished(slurm, job_id)
    assert (job.state, job.exit_code) == ("COMPLETED", 0)
    assert job.node_list and job.elapsed_seconds is not None and job.cpu_time_seconds is not None
    assert job.alloc_cpus and job.alloc_cpus >= 1

    path = f"{scratch}/contract-{job_id}.out"
    first, offset = slurm.files.read(path, 0, 5)
    rest, end = slurm.files.read(path, offset, 1 << 20)
    assert (first, offset) == (b"line ", 5)
    assert first + rest == b"line one\nparam=a,b=c d\n"
    assert end == len(first + rest)
    assert slurm.files.read(path, end, 100) == (b"", end)
    err, _ = slurm.files.read(f"{scratch}/contract-{job_id}.err", 0, 100)
    assert err == b"line three\n"


def test_a_failed_job_never_shows_exit_code_zero(slurm: SlurmClient, scratch: str, marker: str) -> None:
    # slurmrestd 22.05 answers exit code 0 for every job: over REST a FAILED job's code is then
    # unknown (None), never 0; sacct over SSH has the real one.
    job_id = slurm.submit(request("#!/bin/bash\nexit 3\n", scratch, marker))
    [job] = finished(slurm, job_id)
    assert job.state == "FAILED"
    assert job.exit_code == (None if isinstance(slurm, RestClient) else 3)


def test_it_cancels_a_long_job(slurm: SlurmClient, scratch: str, marker: str) -> None:
    job_id = slurm.submit(request("#!/bin/bash\n#SBATCH -t 5\nsleep 300\n", scratch, marker))
    wait_for(lambda: slurm.queue(USER), lambda jobs: any(j.job_id == job_id for j in jobs))
    slurm.cancel(job_id)
    [job] = finished(slurm, job_id)
    assert job.state == "CANCELLED"


def test_an_array_job_shows_each_task(slurm: SlurmClient, scratch: str, marker: str) -> None:
    script = "#!/bin/bash\n#SBATCH --array=0-2%2\n#SBATCH -t 2\necho task $SLURM_ARRAY_TASK_ID\n"
    job_id = slurm.submit(
        SubmitRequest(
            script=script,
            job_name="array",
            comment=marker,
            workdir=scratch,
            extra_args=[f"--output={scratch}/%A_%a.out"],
        )
    )
    tasks = finished(slurm, job_id, count=3)
    assert sorted(t.array_task_id or "" for t in tasks) == ["0", "1", "2"]
    assert {t.array_job_id for t in tasks} == {job_id}
    assert {t.state for t in tasks} == {"COMPLETED"}
    out, _ = slurm.files.read(f"{scratch}/{job_id}_2.out", 0, 100)
    assert out == b"task 2\n"


def test_slurms_rejection_comes_back_verbatim(slurm: SlurmClient, scratch: str, marker: str) -> None:
    with pytest.raises(SlurmRejected) as caught:
        slurm.submit(request(HELLO, scratch, marker, "--partition=nosuchpartition"))
    assert "invalid partition" in caught.value.message.lower()
    assert caught.value.permanent


def test_slurm_rejects_an_account_the_user_has_no_association_with(
    slurm: SlurmClient, scratch: str, marker: str
) -> None:
    with pytest.raises(SlurmRejected) as caught:
        slurm.submit(request("#!/bin/bash\n#SBATCH -A nosuchaccount\ntrue\n", scratch, marker))
    assert "account" in caught.value.message.lower()


def test_it_finds_a_job_by_its_marker(slurm: SlurmClient, scratch: str, marker: str) -> None:
    job_id = slurm.submit(request("#!/bin/bash\nsleep 20\n", scratch, marker, "--hold"))
    try:
        found = slurm.find_by_comment(marker)
        assert [j.job_id for j in found] == [job_id]
        assert slurm.find_by_comment(marker + "-other") == []
    finally:
        slurm.cancel(job_id)


def test_accounting_for_a_job_slurm_never_had_is_empty(slurm: SlurmClient) -> None:
    # slurmdbd answers "Nothing found with query" as an error; sacct prints nothing
    assert slurm.accounting(["99999999"]) == []


def test_accounting_keeps_the_marker_of_a_finished_job(slurm: SlurmClient, scratch: str, marker: str) -> None:
    job_id = slurm.submit(request("#!/bin/bash\ntrue\n", scratch, marker))
    [job] = finished(slurm, job_id)
    assert job.comment == marker


def test_it_reads_the_clusters_partitions_and_nodes(slurm: SlurmClient) -> None:
    state = slurm.cluster_state()
    assert {p.name for p in state.partitions} >= {"debug", "batch"}
    assert state.default_partition == "debug"
    debug = state.partition("debug")
    assert debug is not None and debug.time_limit_minutes == 60 and debug.total_cpus >= 1
    assert state.nodes and state.nodes[0].cpus >= 1 and state.nodes[0].memory_mb > 0


def test_the_controller_answers_a_ping(slurm: SlurmClient) -> None:
    slurm.ping()


def test_an_unknown_host_key_is_refused(ssh_factory: Callable[..., SSHClient]) -> None:
    impostor = "SHA256:" + "A" * 43
    client = ssh_factory(host_key=impostor)
    with pytest.raises(HostKeyError) as caught:
        client.connect()
    assert caught.value.permanent
    assert "not the pinned key" in caught.value.message


def test_a_command_is_answered_when_the_process_holds_over_1024_descriptors(
    ssh_factory: Callable[..., SSHClient],
) -> None:
    # A busy worker's sockets and files push a channel's wake-up pipe past 1024, which
    # select.select refuses with a ValueError.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the descriptor limit ({hard}) is too low to pass 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = []
    try:
        while not held or held[-1] < 1030:
            held.append(os.open(os.devnull, os.O_RDONLY))
        with ssh_factory() as client:
            result = client.run(["/bin/sh", "-c", "sleep 0.2; echo out; echo err >&2"])
        assert (result.exit_status, result.out, result.err.strip()) == (0, "out\n", "err")
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --------------------------------------------------------------------------------------
# Validation equals what Slurm resolves: the same script, submitted held, as scontrol
# shows it.

# The local cluster's users are associated with account `vision` only (`research`
# exists but has no users), so every script here names `vision` or none: a script naming
# another account is refused at submission, which test_slurm_rejects_an_account_... covers.
REALISTIC = {
    "single-gpu-style training": """#!/bin/bash
#SBATCH --job-name=train-resnet
#SBATCH --partition=debug
#SBATCH --account=vision
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=00:30:00
#SBATCH --output=logs/%x-%j.out
module load cuda 2>/dev/null
python train.py --epochs 10
""",
    "mpi over tasks with memory per cpu": """#!/bin/bash
#SBATCH -J mpi
#SBATCH -n 2 --mem-per-cpu=500M
#SBATCH -t 45
srun hostname
""",
    "sweep as an array with throttle": """#!/bin/sh
# a small hyper-parameter sweep
#SBATCH --array=0-9%2
#SBATCH --time 1-0
#SBATCH -p batch -A vision # the group's allocation
#SBATCH --cpus-per-task 1
python sweep.py --trial $SLURM_ARRAY_TASK_ID
""",
    "tasks per node with minutes and seconds": """#!/bin/bash
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --time=10:30
#SBATCH --mem=1024
srun ./a.out
""",
    "defaults only": "#!/bin/bash\necho hello\n",
}


def scontrol_job(ssh: SSHClient, job_id: str) -> dict[str, str]:
    result = ssh.run(["scontrol", "show", "job", "-o", job_id])
    assert result.exit_status == 0, result.err
    return parse_scontrol_oneliner(result.out.strip().splitlines()[0]).fields


@pytest.mark.parametrize("case", sorted(REALISTIC))
def test_the_effective_request_equals_what_slurm_resolves(
    slurm: SlurmClient, ssh: SSHClient, scratch: str, marker: str, case: str
) -> None:
    script = REALISTIC[case]
    hub = [f"--output={scratch}/%x-%j.out", "--hold"]
    req, problems = effective_request(script, ["--job-name=" + case.replace(" ", "-"), *hub])
    assert problems == []
    job_id = slurm.submit(
        SubmitRequest(
            script=script,
            job_name=case.replace(" ", "-"),
            comment=marker,
            workdir=scratch,
            extra_args=hub,
        )
    )
    try:
        shown = scontrol_job(ssh, job_id)
    finally:
        slurm.cancel(job_id)

    assert shown["JobState"] == "PENDING" and shown["Reason"] == "JobHeldUser"
    assert shown["JobName"] == req.job_name
    assert shown["Partition"] == (req.partition or "debug")
    assert shown["Account"] == (req.account or "vision")
    assert shown["NumNodes"].split("-")[0] == str(req.nodes)
    assert shown["NumTasks"] == str(req.ntasks)
    assert shown["CPUs/Task"] == str(req.cpus_per_task)
    assert shown["NumCPUs"] == str(req.total_cpus)
    if req.mem_per_node_mb is not None:
        assert parse_memory_mb(shown["MinMemoryNode"]) == req.mem_per_node_mb
    if req.mem_per_cpu_mb is not None:
        assert parse_memory_mb(shown["MinMemoryCPU"]) == req.mem_per_cpu_mb
    if req.time_limit_minutes is not None:
        seconds = parse_duration(shown["TimeLimit"])
        assert seconds is not None and seconds / 60 == req.time_limit_minutes
    if req.array is not None:
        spec = parse_array(shown["ArrayTaskId"])
        assert spec is not None and spec.count == req.array_task_count
    assert shown["StdOut"].startswith(scratch)
