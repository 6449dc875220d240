"""The hub's effective request is the one Slurm resolves (issue 9, findings 1, 4 and 6),
checked on the local cluster through both transports: each case is resolved with the
partitions the transport reads, submitted held with the options the hub adds, and
compared with `scontrol show job`; the CPUs Slurm allocates come from `sbatch --test-only`
with the same options. Grant as in the issue: partition debug, 1 CPU, 2048 MB, 10 minutes.
"""

from __future__ import annotations

import math
import posixpath
import re

import pytest

from apps.integrations.slurm.base import SlurmClient, SlurmRejected, SubmitRequest
from apps.integrations.slurm.parsing import parse_duration, parse_scontrol_oneliner
from apps.integrations.slurm.policy import Limits, check_against_limits, expand_filename
from apps.integrations.slurm.request import effective_request, hub_defaults
from apps.integrations.slurm.rest import RestClient
from apps.integrations.slurm.sbatch import parse_memory_mb
from apps.integrations.slurm.ssh import SSHClient

from .conftest import USER

pytestmark = pytest.mark.slurm

GRANT = dict(max_time_minutes=10, max_mem_mb=2048)


def limits(scratch: str, *, rest: bool, job_name: str = "job") -> Limits:
    return Limits(
        allowed_partitions=frozenset({"debug"}),
        max_cpus=1,
        max_mem_mb=2048,
        max_time_minutes=10,
        job_root=scratch,
        workdir=scratch,
        job_name=job_name,
        username=USER,
        rest=rest,
    )


def scontrol_job(ssh: SSHClient, job_id: str) -> dict[str, str]:
    result = ssh.run(["scontrol", "show", "job", "-o", job_id])
    assert result.exit_status == 0, result.err
    return parse_scontrol_oneliner(result.out.strip().splitlines()[0]).fields


def tres(shown: dict[str, str]) -> dict[str, str]:
    """The job's trackable resources (`TRES=` in Slurm 22.05's one-line form, ReqTRES or
    AllocTRES in others): what Slurm counts against limits."""
    text = shown.get("TRES") or shown.get("AllocTRES") or shown["ReqTRES"]
    return dict(item.split("=", 1) for item in text.split(",") if "=" in item)


def test_only_processors(ssh: SSHClient, script: str, args: list[str]) -> int:
    """The CPUs Slurm would allocate, as `sbatch --test-only` reports them."""
    result = ssh.run(["sbatch", "--test-only", *args], stdin=script.encode())
    found = re.search(r"using (\d+) processors", result.err + result.out)
    assert found, result.err
    return int(found.group(1))


test_only_processors.__test__ = False  # a helper, not a test


# script -> what the grant must say about it (an empty list: it fits)
CASES = {
    "no time and no partition": ("#!/bin/bash\nhostname\n", []),
    "time-min alone": ("#!/bin/bash\n#SBATCH --time-min=5\nhostname\n", []),
    "exclusive with memory per cpu": (
        "#!/bin/bash\n#SBATCH -t 5 --exclusive --mem-per-cpu=2000\nhostname\n",
        ["2 CPUs", "4000 MB"],
    ),
    "mincpus with memory per cpu": (
        "#!/bin/bash\n#SBATCH -t 5 --mincpus=2 --mem-per-cpu=2000\nhostname\n",
        ["2 CPUs", "4000 MB"],
    ),
    "time zero": ("#!/bin/bash\n#SBATCH --time=0\nhostname\n", ["no time limit"]),
    "time unlimited": ("#!/bin/bash\n#SBATCH --time=UNLIMITED\nhostname\n", ["no time limit"]),
    "several tasks on the default memory": ("#!/bin/bash\n#SBATCH -t 5 -n 2\nhostname\n", ["2 CPUs"]),
    # Slurm reads a memory of 0 in any form as the whole node's memory.
    "memory per node zero": ("#!/bin/bash\n#SBATCH -t 5 --mem=0\nhostname\n", ["--mem=0 asks for all"]),
    "memory per cpu zero": ("#!/bin/bash\n#SBATCH -t 5 --mem-per-cpu=0\nhostname\n", ["--mem-per-cpu=0 asks for all"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_recorded_request_is_what_slurm_runs(
    slurm: SlurmClient, ssh: SSHClient, scratch: str, marker: str, case: str
) -> None:
    script, refusals = CASES[case]
    partitions = slurm.cluster_state().partitions
    alone, _ = effective_request(script, partitions=partitions)
    args = [f"--output={scratch}/%j.out", *hub_defaults(alone, **GRANT)]
    req, problems = effective_request(script, args, partitions)
    assert problems == []
    found = check_against_limits(req, limits(scratch, rest=isinstance(slurm, RestClient)))
    for word in refusals:
        assert any(word in p.message for p in found), found
    if not refusals:
        assert found == []

    job_id = slurm.submit(
        SubmitRequest(
            script=script,
            job_name="grant-" + case.replace(" ", "-"),
            comment=marker,
            workdir=scratch,
            extra_args=[*args, "--hold"],
        )
    )
    try:
        shown = scontrol_job(ssh, job_id)
    finally:
        slurm.cancel(job_id)

    assert shown["Partition"] == req.partition == "debug"
    if req.time_limit_minutes == math.inf:
        assert shown["TimeLimit"] == "UNLIMITED"
    else:
        assert parse_duration(shown["TimeLimit"]) == req.time_limit_minutes * 60
    if req.time_min_minutes is not None:
        assert parse_duration(shown["TimeMin"]) == req.time_min_minutes * 60
    # what Slurm allocates: the processors of --test-only
    cpus = test_only_processors(ssh, script, [f"--output={scratch}/%j.out", *args])
    assert cpus == req.total_cpus
    # the memory Slurm counts against limits is its TRES (MinMemory* reads 0 for "all of it")
    counted = tres(shown)
    memory = parse_memory_mb(counted["mem"])
    if req.total_memory_mb == 0:
        node_memory = max(p.node_memory_mb for p in ssh.cluster_state().partitions if p.name == "debug")
        assert memory == node_memory * req.nodes > GRANT["max_mem_mb"]
    elif "MinMemoryCPU" in shown:
        # a held job's TRES counts the CPUs asked, not yet those allocated
        assert memory // int(counted["cpu"]) * cpus == req.total_memory_mb
    else:
        assert memory == req.total_memory_mb
    if req.exclusive:
        assert shown["OverSubscribe"] == "NO"  # --exclusive arrived, in slurmrestd's form too
    if req.mincpus:
        assert shown["MinCPUsNode"] == str(req.mincpus)


def test_a_job_name_fills_the_input_path_as_slurm_does(
    slurm: SlurmClient, ssh: SSHClient, scratch: str, marker: str
) -> None:
    name = "../../../etc/hostname"
    script = f"#!/bin/bash\n#SBATCH -t 5\n#SBATCH --input={scratch}/%x\n#SBATCH --error={scratch}/%u-%x.err\ncat\n"
    req, _ = effective_request(script)
    found = check_against_limits(req, limits(scratch, rest=isinstance(slurm, RestClient), job_name=name))
    assert [p.line for p in found] == [3, 4]
    job_id = slurm.submit(
        SubmitRequest(script=script, job_name=name, comment=marker, workdir=scratch, extra_args=["--hold"])
    )
    try:
        shown = scontrol_job(ssh, job_id)
    finally:
        slurm.cancel(job_id)
    for key, value in (("StdIn", f"{scratch}/%x"), ("StdErr", f"{scratch}/%u-%x.err")):
        ours = expand_filename(value, job_name=name, username=USER)
        assert shown[key] == ours
        assert posixpath.normpath(ours) in " ".join(p.message for p in found)


@pytest.mark.parametrize("directive", ["--signal=USR1@60", "--signal=R:USR2@30", "--exclusive=user"])
def test_options_sent_in_slurmrestds_form_are_taken(
    slurm: SlurmClient, ssh: SSHClient, scratch: str, marker: str, directive: str
) -> None:
    script = f"#!/bin/bash\n#SBATCH -t 5 {directive}\nhostname\n"
    job_id = slurm.submit(
        SubmitRequest(script=script, job_name="opt", comment=marker, workdir=scratch, extra_args=["--hold"])
    )
    try:
        shown = scontrol_job(ssh, job_id)
    finally:
        slurm.cancel(job_id)
    if directive.startswith("--exclusive"):
        assert shown["OverSubscribe"] == "USER"
    assert shown["JobState"] == "PENDING"


@pytest.mark.parametrize("directive", ["--export=ALL", "--signal=B:USR1@60"])
def test_rest_refuses_what_it_cannot_send_for_good(rest: RestClient, scratch: str, marker: str, directive: str) -> None:
    script = f"#!/bin/bash\n#SBATCH -t 5 {directive}\nhostname\n"
    req, _ = effective_request(script)
    assert [p.line for p in check_against_limits(req, Limits(rest=True))] == [2]
    with pytest.raises(SlurmRejected) as caught:
        rest.submit(
            SubmitRequest(script=script, job_name="opt", comment=marker, workdir=scratch, extra_args=["--hold"])
        )
    assert caught.value.permanent and "slurmrestd" in caught.value.message
