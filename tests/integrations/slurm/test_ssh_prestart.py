"""A batch command started ahead of its program (`SSHClient.prestart_batch`, as a sweep's POST
does before its transaction): the next batch sends its program on it instead of starting a
command; one too old is closed unused; one closed unused runs nothing on the login node."""

from __future__ import annotations

import shlex
import time
import uuid
from collections.abc import Callable

import paramiko
import pytest

from apps.integrations.slurm import ssh as ssh_module
from apps.integrations.slurm.base import SubmitRequest
from apps.integrations.slurm.ssh import SSHClient

from .conftest import wait_for

pytestmark = pytest.mark.slurm


@pytest.fixture
def fresh_ssh(ssh_factory: Callable[..., SSHClient]) -> SSHClient:
    client = ssh_factory()
    client.connect()
    yield client
    client.close()


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every command started on any connection, as the login node gets it."""
    started: list[str] = []
    exec_command = paramiko.Channel.exec_command
    monkeypatch.setattr(
        paramiko.Channel, "exec_command", lambda ch, cmd: (started.append(cmd), exec_command(ch, cmd))[1]
    )
    return started


def held(scratch: str, name: str) -> SubmitRequest:
    return SubmitRequest(
        script="#!/bin/bash\ntrue\n",
        job_name=name,
        comment=f"axle-test:{uuid.uuid4().hex}",
        workdir=scratch,
        extra_args=["--hold", "-t", "1", f"--output={scratch}/%j.out"],
    )


def submitted_once(ssh: SSHClient, req: SubmitRequest, answers: dict) -> str:
    job_id = answers[req.comment]
    assert isinstance(job_id, str) and job_id.isdigit(), answers
    assert [j.job_id for j in ssh.find_by_comment(req.comment)] == [job_id]
    return job_id


BOOT = " ".join(shlex.quote(w) for w in ssh_module._BATCH_COMMAND)


def test_the_next_batch_sends_its_program_on_the_command_started_ahead(
    fresh_ssh: SSHClient, ssh: SSHClient, scratch: str, commands: list[str]
) -> None:
    fresh_ssh.prestart_batch()
    assert commands == [BOOT]
    # Another command meanwhile starts its own and leaves the batch's waiting.
    assert fresh_ssh.run(["true"]).exit_status == 0
    req = held(scratch, "ahead")
    answers = fresh_ssh.submit_many([req])
    assert commands == [BOOT, "true"], "the batch started no command of its own"
    job_id = submitted_once(ssh, req, answers)
    try:
        assert fresh_ssh._spare is None
        # Taken once: the next batch starts its own.
        again = held(scratch, "ahead-2")
        commands.clear()
        answers = fresh_ssh.submit_many([again])
        assert commands == [BOOT]
        ssh.cancel(submitted_once(ssh, again, answers))
    finally:
        ssh.cancel(job_id)


def test_a_command_started_too_long_ago_is_closed_and_the_batch_starts_its_own(
    fresh_ssh: SSHClient, ssh: SSHClient, scratch: str, commands: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_ssh.prestart_batch()
    channel = fresh_ssh._spare[0]
    monkeypatch.setattr(ssh_module, "SPARE_SECONDS", 0.0)
    time.sleep(0.01)
    req = held(scratch, "stale")
    answers = fresh_ssh.submit_many([req])
    assert commands == [BOOT, BOOT] and channel.closed
    job_id = submitted_once(ssh, req, answers)
    try:
        assert fresh_ssh._spare is None
    finally:
        ssh.cancel(job_id)


def test_a_command_started_ahead_and_never_used_ends_running_nothing(
    ssh_factory: Callable[..., SSHClient], ssh: SSHClient
) -> None:
    # Its own user's processes on the login node: the waiting shell is one until it is closed.
    def waiting() -> list[str]:
        out = ssh.run(["pgrep", "-u", "scientist", "-f", "read -r n e"]).out.split()
        return [pid for pid in out if pid]

    before = set(waiting())
    client = ssh_factory()
    client.prestart_batch()
    assert client._spare is not None
    deadline = time.monotonic() + 10
    while not set(waiting()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    started = set(waiting()) - before
    assert started, "the command started ahead waits on the login node"
    client.close()
    wait_for(lambda: [p for p in waiting() if p in started], lambda left: not left, timeout=20)


def test_a_command_that_cannot_be_started_ahead_is_no_error(ssh_factory: Callable[..., SSHClient]) -> None:
    client = ssh_factory(host_key="SHA256:" + "A" * 43)  # a host key that is not the server's
    client.prestart_batch()
    assert client._spare is None
