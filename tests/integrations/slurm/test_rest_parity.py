"""REST and SSH accept the same scripts (issue 9, finding 6): every sbatch option the hub
lets through to a REST cluster arrives in Slurm exactly as sbatch would have sent it. Each
option is submitted held through both transports, and `scontrol show job` must show the same
job; an option Slurm refuses on this cluster (no GPUs, features, licenses or reservations
here) is refused through both. Options slurmrestd 0.0.38 cannot take are refused at
validation for REST clusters (see test_effective_request.py) and never reach it."""

from __future__ import annotations

import pytest

from apps.integrations.slurm.base import SlurmRejected, SubmitRequest
from apps.integrations.slurm.parsing import parse_scontrol_oneliner
from apps.integrations.slurm.policy import FORBIDDEN, Limits, check_against_limits, rest_refusal
from apps.integrations.slurm.request import effective_request
from apps.integrations.slurm.rest import IGNORED, PROPERTY, RestClient
from apps.integrations.slurm.sbatch import OPTIONS
from apps.integrations.slurm.ssh import SSHClient

pytestmark = pytest.mark.slurm

# One directive per option slurmrestd has a property for, in a form this cluster takes.
ARRIVES = [
    "-A vision",
    "--array=0-1%1",
    "--begin=now+1hour",
    "--bb=x",
    "--comment=hello",
    "--core-spec=1",
    "--cores-per-socket=1",
    "--cluster-constraint=x",
    "--cpu-freq=high",
    "-c 1",
    "--deadline=now+2days",
    "--delay-boot=5",
    "--dependency=singleton",
    "--distribution=block",
    "--error=x.err",
    "--exclusive",
    "--exclusive=user",
    "--gpu-bind=closest",
    "--gpu-freq=high",
    "--gres=gpu:0",
    "--gres-flags=enforce-binding",
    "--hint=multithread",
    "--hold",
    "--input=/dev/null",
    "-J other",
    "--kill-on-invalid-dep=yes",
    "--mail-type=END --mail-user=someone@example.org",
    "--mcs-label=x",
    "--mem=100",
    "--mem-bind=local",
    "--mem-per-cpu=100",
    "--mincpus=2",
    "--nice=10",
    "-k",
    "--no-kill=off",
    "--no-requeue",
    "-w vm",
    "-N 1",
    "-n 2",
    "--ntasks-per-core=1",
    "--ntasks-per-node=1",
    "--ntasks-per-socket=1",
    "--open-mode=append",
    "-o x.out",
    "-p batch",
    "--priority=10",
    "--profile=none",
    "-q normal",
    "--requeue",
    "--signal=USR1@60",
    "--signal=R:USR2@30",
    "--sockets-per-node=1",
    "--spread-job",
    "--thread-spec=1",
    "--threads-per-core=1",
    "-t 5",
    "--time-min=2",
    "--tmp=0",
    "--use-min-nodes",
    "--wait-all-nodes=1",
    "--wckey=x",
]
# Options this cluster has nothing for: Slurm refuses them, through either transport.
REFUSED_HERE = [
    "--acctg-freq=task=30",
    "--batch=feat",
    "-C feat",
    "--exclude=nohost",
    "--licenses=foo",
    "--reservation=x",
]
# GPU options on a cluster without GPUs: slurmrestd 22.05 fails to parse them, and a run of
# such requests once crashed it (glibc: malloc assertion failure). The hub refuses them at
# validation for a partition without GPUs, so they are sent through SSH only here.
NO_GPUS_HERE = [
    "--cpus-per-gpu=1",
    "--gpus=1",
    "--gpus-per-node=1",
    "--gpus-per-socket=1",
    "--gpus-per-task=1",
    "--mem-per-gpu=100",
    "--ntasks-per-gpu=1",
]
# scontrol fields that differ between any two submissions
VOLATILE = {"JobId", "ArrayJobId", "AllocNode:Sid", "SubmitTime", "LastSchedEval", "EligibleTime", "AccrueTime"}


def submit_and_show(client, ssh: SSHClient, script: str, scratch: str, marker: str) -> dict[str, str]:
    job_id = client.submit(
        SubmitRequest(
            script=script,
            job_name="parity",
            comment=marker,
            workdir=scratch,
            extra_args=["--hold", f"--output={scratch}/parity.out"],
        )
    )
    try:
        result = ssh.run(["scontrol", "show", "job", "-o", job_id])
        assert result.exit_status == 0, result.err
        fields = parse_scontrol_oneliner(result.out.strip().splitlines()[0]).fields
    finally:
        ssh.run(["scancel", job_id])
    return {k: v for k, v in fields.items() if k not in VOLATILE}


def test_every_option_is_either_sent_ignored_or_refused_at_validation() -> None:
    for option in OPTIONS:
        assert option in PROPERTY or option in IGNORED or option in FORBIDDEN or rest_refusal(option, "x"), (
            f"--{option} has no REST mapping and no refusal"
        )


def test_the_directives_tried_here_cover_every_property() -> None:
    tried = " ".join(ARRIVES + REFUSED_HERE + NO_GPUS_HERE)
    for option in PROPERTY:
        if option in FORBIDDEN:
            continue
        short = OPTIONS[option][0]
        assert f"--{option}" in tried or (short and f"-{short} " in tried + " "), f"--{option} is never tried"


@pytest.mark.parametrize("directive", ARRIVES)
def test_an_option_arrives_the_same_through_rest_and_ssh(
    ssh: SSHClient, rest: RestClient, scratch: str, marker: str, directive: str
) -> None:
    script = f"#!/bin/bash\n#SBATCH {directive}\nhostname\n"
    req, problems = effective_request(script)
    assert problems == [] and check_against_limits(req, Limits(rest=True)) == []
    over_ssh = submit_and_show(ssh, ssh, script, scratch, marker)
    over_rest = submit_and_show(rest, ssh, script, scratch, marker)
    assert over_rest == over_ssh


@pytest.mark.parametrize("directive", REFUSED_HERE)
def test_an_option_slurm_refuses_is_refused_for_good(ssh: SSHClient, scratch: str, marker: str, directive: str) -> None:
    script = f"#!/bin/bash\n#SBATCH {directive}\nhostname\n"
    with pytest.raises(SlurmRejected) as caught:
        ssh.submit(SubmitRequest(script=script, job_name="parity", comment=marker, workdir=scratch))
    assert caught.value.permanent


def test_slurms_refusal_through_rest_is_permanent_too(rest: RestClient, scratch: str, marker: str) -> None:
    # One case only: a run of refused submissions was seen to crash slurmrestd 22.05
    # (glibc heap assertion), which other tests on this cluster need.
    script = "#!/bin/bash\n#SBATCH --reservation=none-such\nhostname\n"
    with pytest.raises(SlurmRejected) as caught:
        rest.submit(SubmitRequest(script=script, job_name="parity", comment=marker, workdir=scratch))
    assert caught.value.permanent and "reservation" in caught.value.message


@pytest.fixture(scope="module")
def rest_partitions(rest: RestClient):
    return rest.cluster_state().partitions


@pytest.mark.parametrize("directive", NO_GPUS_HERE)
def test_a_gpu_option_is_refused_at_validation_where_there_is_no_gpu(
    ssh: SSHClient, rest_partitions, scratch: str, marker: str, directive: str
) -> None:
    script = f"#!/bin/bash\n#SBATCH {directive}\nhostname\n"
    req, _ = effective_request(script, partitions=rest_partitions)
    problems = check_against_limits(req, Limits(rest=True))
    assert [p.line for p in problems] == [2] and "has none" in problems[0].message
    with pytest.raises(SlurmRejected):
        ssh.submit(SubmitRequest(script=script, job_name="parity", comment=marker, workdir=scratch))


@pytest.mark.parametrize("directive", ["--hint=nomultithread", "--hint=compute_bound", "--hint=memory_bound"])
def test_a_hint_slurmrestd_would_apply_differently_is_refused_for_rest(directive: str) -> None:
    req, _ = effective_request(f"#!/bin/bash\n#SBATCH {directive}\n")
    [problem] = check_against_limits(req, Limits(rest=True))
    assert "--threads-per-core=1" in problem.message
    assert check_against_limits(req, Limits()) == []
