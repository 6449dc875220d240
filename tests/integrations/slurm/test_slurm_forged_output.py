"""A job's own text cannot reshape what the hub reads from Slurm (issue 9, finding 3).

The job that carries the forgery is submitted with sbatch directly, as its user could: the
hub itself refuses such names before they reach Slurm."""

from __future__ import annotations

import uuid

import pytest

from apps.integrations.slurm.base import SubmitRequest
from apps.integrations.slurm.ssh import SSHClient

from .conftest import USER, wait_for

pytestmark = pytest.mark.slurm


def test_a_name_with_a_forged_row_changes_no_other_jobs_state(ssh: SSHClient, scratch: str) -> None:
    victim_marker = f"axle-test:{uuid.uuid4().hex}"
    victim = ssh.submit(
        SubmitRequest(
            script="#!/bin/bash\n#SBATCH -t 1\ntrue\n",
            job_name="victim",
            comment=victim_marker,
            workdir=scratch,
            extra_args=["--hold", f"--output={scratch}/victim-%j.out"],
        )
    )
    # The row the old line-based squeue parser would have taken for the victim, RUNNING
    # since a forged start time; a second one for sacct's format; both in one job name.
    fake = "\x1f".join([victim, victim, "N/A", "x", victim_marker, "RUNNING", "None", USER, "vision", "debug"])
    fake += "\x1f1700000000" * 2 + "\x1f0:01\x1f1:00\x1fvm\x1f1\x1f1\x1f/tmp"
    name = f"evil\n{fake}\n{victim}|{victim}|x|{victim_marker}|COMPLETED|None\n"
    evil_marker = f"axle-test:{uuid.uuid4().hex}"
    result = ssh.run(
        [
            ssh.slurm_bin_dir + "/sbatch",
            "--parsable",
            "--hold",
            f"--job-name={name}",
            f"--comment={evil_marker}",
            f"--chdir={scratch}",
            "--output=/dev/null",
        ],
        stdin=b"#!/bin/bash\ntrue\n",
    )
    assert result.exit_status == 0, result.err
    evil = result.out.strip()
    try:
        queued = {j.job_id: j for j in ssh.queue(USER)}
        assert (queued[victim].state, queued[victim].start_time, queued[victim].name) == ("PENDING", None, "victim")
        assert [j.job_id for j in ssh.queue(USER)].count(victim) == 1
        assert (queued[evil].name, queued[evil].comment, queued[evil].state) == (name, evil_marker, "PENDING")
        found = ssh.find_by_comments([victim_marker, evil_marker])
        assert [j.job_id for j in found[victim_marker]] == [victim]
        assert [j.job_id for j in found[evil_marker]] == [evil]
    finally:
        ssh.cancel(victim)
        ssh.cancel(evil)
    jobs = wait_for(
        lambda: ssh.accounting([victim, evil]),
        lambda jobs: len(jobs) == 2 and all(j.state == "CANCELLED" and j.name != "allocation" for j in jobs),
    )
    assert {j.job_id: j.name for j in jobs} == {victim: "victim", evil: name}
