"""A one-job submission sent ahead of its go (`SSHClient.stage_one`, as a sweep's POST does
before its transaction): sbatch starts with it but gets its script, and so submits, only when
the submission of that same job sends the go on the same command; another job's submission,
its time passing or the connection closing closes it, and then its sbatch reads an empty
script: nothing of it is submitted."""

from __future__ import annotations

import base64
import contextlib
import pwd
import shlex
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest

from apps.integrations.slurm import ssh as ssh_module
from apps.integrations.slurm.base import AmbiguousSubmitError, SubmitRequest
from apps.integrations.slurm.ssh import SSHClient

from .conftest import wait_for

pytestmark = pytest.mark.slurm

BOOT = " ".join(shlex.quote(w) for w in ssh_module._BATCH_COMMAND)


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
    exec_command, request = paramiko.Channel.exec_command, ssh_module._exec_request
    monkeypatch.setattr(
        paramiko.Channel, "exec_command", lambda ch, cmd: (started.append(cmd), exec_command(ch, cmd))[1]
    )
    # A program sent ahead asks for its command without waiting for the answer.
    monkeypatch.setattr(ssh_module, "_exec_request", lambda ch, cmd: (started.append(cmd), request(ch, cmd))[1])
    return started


def held(scratch: str, name: str) -> SubmitRequest:
    return SubmitRequest(
        script="#!/bin/bash\ntrue\n",
        job_name=name,
        comment=f"axle-test:{uuid.uuid4().hex}",
        workdir=scratch,
        env={"NOTE": "staged"},
        extra_args=["--hold", "-t", "1", f"--output={scratch}/%j.out"],
    )


def on_slurm(ssh: SSHClient, req: SubmitRequest) -> list[str]:
    return [j.job_id for j in ssh.find_by_comment(req.comment)]


def sbatch_waiting(ssh: SSHClient, req: SubmitRequest) -> list[str]:
    """The login node's sbatch processes for `req` (its marker is in their command line)."""
    pattern = "[s]batch .*--comment=" + req.comment
    return ssh.run(["pgrep", "-u", "scientist", "-f", pattern]).out.split()


def test_a_staged_submission_gives_sbatch_its_script_only_at_its_go_on_the_same_command(
    fresh_ssh: SSHClient, ssh: SSHClient, scratch: str, commands: list[str]
) -> None:
    req = held(scratch, "staged")
    assert fresh_ssh.stage_one(req) is True
    assert commands == [BOOT]
    # sbatch is started ahead (loaded, waiting for its script), but asks Slurm for nothing.
    wait_for(lambda: sbatch_waiting(ssh, req), bool, timeout=10)
    time.sleep(1.0)  # the login node has had the program a while: no job without the go
    assert on_slurm(ssh, req) == []
    commands.clear()
    answers = fresh_ssh.submit_many([req])
    assert commands == [], "the go went on the staged command: no command of its own"
    job_id = answers[req.comment]
    try:
        assert isinstance(job_id, str) and job_id.isdigit(), answers
        assert on_slurm(ssh, req) == [job_id]
        assert fresh_ssh._spare is None
        out = ssh.run(["scontrol", "show", "job", job_id]).out
        assert "JobState=PENDING" in out and f"Comment={req.comment}" in out, out
    finally:
        ssh.cancel(job_id)


def test_another_jobs_submission_closes_the_staged_one_which_never_runs(
    fresh_ssh: SSHClient, ssh: SSHClient, scratch: str, commands: list[str]
) -> None:
    staged, other = held(scratch, "staged-not-sent"), held(scratch, "other")
    fresh_ssh.stage_one(staged)
    channel = fresh_ssh._spare.channel
    answers = fresh_ssh.submit_many([other])
    assert commands == [BOOT, BOOT] and channel.closed
    job_id = answers[other.comment]
    try:
        assert isinstance(job_id, str) and on_slurm(ssh, other) == [job_id]
        time.sleep(1.0)
        assert on_slurm(ssh, staged) == []
    finally:
        ssh.cancel(job_id)


def test_a_staged_submission_past_its_time_is_closed_and_the_job_sent_once(
    fresh_ssh: SSHClient, ssh: SSHClient, scratch: str, commands: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    req = held(scratch, "stale")
    fresh_ssh.stage_one(req)
    channel = fresh_ssh._spare.channel
    monkeypatch.setattr(ssh_module, "SPARE_SECONDS", 0.0)
    time.sleep(0.01)
    answers = fresh_ssh.submit_many([req])
    assert commands == [BOOT, BOOT] and channel.closed
    job_id = answers[req.comment]
    try:
        time.sleep(1.0)  # the closed one had its chance to run
        assert isinstance(job_id, str) and on_slurm(ssh, req) == [job_id]
    finally:
        ssh.cancel(job_id)


def test_a_staged_command_the_login_host_did_not_start_leaves_the_job_to_a_command_of_its_own(
    fresh_ssh: SSHClient, ssh: SSHClient, scratch: str, commands: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    req = held(scratch, "refused-ahead")
    fresh_ssh.stage_one(req)
    channel = fresh_ssh._spare.channel
    monkeypatch.setattr(ssh_module, "_exec_answered", lambda channel, timeout: False)
    answers = fresh_ssh.submit_many([req])
    assert commands == [BOOT, BOOT] and channel.closed
    job_id = answers[req.comment]
    try:
        time.sleep(1.0)  # the closed one had its chance to run
        assert isinstance(job_id, str) and on_slurm(ssh, req) == [job_id]  # once
    finally:
        ssh.cancel(job_id)


def test_a_staged_submission_whose_connection_closes_ends_submitting_nothing(
    ssh_factory: Callable[..., SSHClient], ssh: SSHClient, scratch: str
) -> None:
    def waiting() -> set[str]:
        # `[r]ead`: the pattern does not match a shell that runs pgrep itself.
        return set(ssh.run(["pgrep", "-u", "scientist", "-f", "[r]ead -r n e"]).out.split())

    before = waiting()
    client = ssh_factory()
    client.connect()
    req = held(scratch, "closed")
    client.stage_one(req)
    assert client._spare is not None
    deadline = time.monotonic() + 10
    while not waiting() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    started = waiting() - before
    assert started, "the staged program waits on the login node"
    wait_for(lambda: sbatch_waiting(ssh, req), bool, timeout=10)
    client.close()
    wait_for(lambda: [p for p in waiting() if p in started], lambda left: not left, timeout=20)
    # sbatch read an empty script and ended without asking Slurm for anything.
    wait_for(lambda: sbatch_waiting(ssh, req), lambda left: not left, timeout=20)
    assert on_slurm(ssh, req) == []


def test_a_staged_program_given_another_line_than_its_go_submits_nothing(
    fresh_ssh: SSHClient, ssh: SSHClient, scratch: str
) -> None:
    req = held(scratch, "wrong-go")
    fresh_ssh.stage_one(req)
    spare, fresh_ssh._spare = fresh_ssh._spare, None
    channel = spare.channel
    wait_for(lambda: sbatch_waiting(ssh, req), bool, timeout=10)
    assert spare.sending.sent(10)
    channel.settimeout(30)  # a failure fails, not hangs
    channel.sendall(b"AXLE-END-0000000000000000\n")  # a line, but not its end mark
    channel.shutdown_write()
    out = b""
    while chunk := channel.recv(65536):
        out += chunk
    status = channel.recv_exit_status()
    channel.close()
    lines = out.decode().splitlines()
    assert "AXLE-READY" not in lines, lines
    (answer,) = [line.split("\t") for line in lines if line.startswith("AXLE-ONE\t")]
    assert answer[1] == req.comment and answer[2] != "0", answer
    # sbatch's own refusal, not a failure of the program around it.
    assert "Batch script is empty" in base64.b64decode(answer[3]).decode(), answer
    assert status == 0
    time.sleep(0.5)
    assert on_slurm(ssh, req) == []


def test_a_connection_lost_before_the_batch_said_it_reached_sbatch_is_ambiguous(
    fresh_ssh: SSHClient, ssh: SSHClient, scratch: str
) -> None:
    # The program ran to its end (sbatch submitted the job); the hub saw nothing of it before
    # the connection broke. "Nothing was submitted" would queue the job again: a second one.
    req = held(scratch, "lost")
    real_run = fresh_ssh.run

    def run(args, *, stdin=None, timeout=None):
        real_run(args, stdin=stdin, timeout=timeout)
        raise ssh_module._ConnectionLost("connection reset", b"")

    fresh_ssh.run = run
    answer = fresh_ssh.submit_many([req])[req.comment]
    found = on_slurm(ssh, req)
    try:
        assert isinstance(answer, AmbiguousSubmitError), answer
        assert len(found) == 1, found  # found by its marker, not sent again
    finally:
        for job_id in found:
            ssh.cancel(job_id)


def test_nothing_is_sent_ahead_without_a_live_connection_and_none_is_made(
    ssh_factory: Callable[..., SSHClient], scratch: str
) -> None:
    # A request's bound covers a connection being made (`transport.ready`), not this.
    client = ssh_factory()
    assert client.stage_one(held(scratch, "unconnected")) is False
    assert client._spare is None and client._client is None
    client.connect()
    client._client.get_transport().close()  # a connection that died meanwhile
    assert client.stage_one(held(scratch, "dead")) is False
    assert client._spare is None
    client.close()


def test_the_program_is_sent_without_the_caller_waiting_for_the_login_host_and_before_the_go(
    fresh_ssh: SSHClient, ssh: SSHClient, scratch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sshd opens a session's window only once it has started the command; the caller goes on
    # meanwhile (its transaction), and the go follows the whole program on the channel.
    sent: list[tuple[str, str]] = []
    sendall = paramiko.Channel.sendall

    def slow(channel, data):
        kind = "go" if data.count(b"\n") == 1 and data.startswith(b"AXLE-END-") else "program"
        if kind == "program":
            time.sleep(0.5)  # a login host slow to start the command
        sendall(channel, data)
        sent.append((threading.current_thread().name, kind))

    monkeypatch.setattr(paramiko.Channel, "sendall", slow)
    req = held(scratch, "sent-behind")
    fresh_ssh.stage_one(req)
    assert sent == [], "stage_one returned before its program was sent"
    answers = fresh_ssh.submit_many([req])
    job_id = answers[req.comment]
    try:
        assert isinstance(job_id, str) and job_id.isdigit(), answers
        assert sent == [("axle-ssh-send", "program"), (threading.current_thread().name, "go")], sent
        assert on_slurm(ssh, req) == [job_id]
    finally:
        ssh.cancel(job_id)


def test_a_program_not_sent_in_time_is_closed_and_the_job_sent_on_a_command_of_its_own(
    fresh_ssh: SSHClient, ssh: SSHClient, scratch: str, commands: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sendall = paramiko.Channel.sendall
    gate = threading.Event()

    def stuck(channel, data):
        if threading.current_thread().name == "axle-ssh-send":
            gate.wait(10)  # the login host never opens the window in time
        sendall(channel, data)

    monkeypatch.setattr(paramiko.Channel, "sendall", stuck)
    req = held(scratch, "never-sent")
    sent = ssh_module._Sending.sent
    monkeypatch.setattr(ssh_module._Sending, "sent", lambda sending, timeout: sent(sending, 0.3))
    fresh_ssh.stage_one(req)
    channel = fresh_ssh._spare.channel
    answers = fresh_ssh.submit_many([req])
    gate.set()
    job_id = answers[req.comment]
    try:
        assert commands == [BOOT, BOOT] and channel.closed
        time.sleep(1.0)  # the closed one had its chance to run
        assert isinstance(job_id, str) and on_slurm(ssh, req) == [job_id]  # once
    finally:
        ssh.cancel(job_id)


def test_a_staged_program_past_its_time_is_closed_when_its_connection_goes_back_and_never_runs(
    fresh_ssh: SSHClient, ssh: SSHClient, scratch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No submission took it within SPARE_SECONDS (its request failed while another thread held
    # the connection, say): the pool closes it as the connection comes back, not at its next
    # submission or close; its sbatch reads an empty script and nothing waits on the login node.
    req = held(scratch, "expired")
    assert fresh_ssh.stage_one(req) is True
    wait_for(lambda: sbatch_waiting(ssh, req), bool, timeout=10)
    fresh_ssh.expire_staged()
    assert fresh_ssh._spare is not None, "a program within its time is kept"
    monkeypatch.setattr(ssh_module, "SPARE_SECONDS", 0.0)
    fresh_ssh.expire_staged()
    assert fresh_ssh._spare is None
    wait_for(lambda: sbatch_waiting(ssh, req), lambda found: not found, timeout=10)
    assert on_slurm(ssh, req) == []


def lingering(monkeypatch: pytest.MonkeyPatch, seconds: int) -> None:
    """Every one-job program sleeps `seconds` after its last line (`one` prints nothing then)."""
    program = ssh_module.SSHClient._one_program
    monkeypatch.setattr(
        ssh_module.SSHClient,
        "_one_program",
        staticmethod(lambda job, tidy: program(job, tidy) + f"\nsleep {seconds}".encode()),
    )


def test_the_answer_is_taken_as_soon_as_its_last_line_is_in_not_at_the_shells_exit(
    fresh_ssh: SSHClient, ssh: SSHClient, scratch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `one` prints nothing after its AXLE-ONE line: the submission does not wait for the shell
    # to exit and sshd to say so. A program that lingers 5 s after it shows that.
    lingering(monkeypatch, 5)
    req = held(scratch, "answered")
    assert fresh_ssh.stage_one(req) is True
    started = time.monotonic()
    job_id = fresh_ssh.submit_many([req])[req.comment]
    took = time.monotonic() - started
    try:
        assert isinstance(job_id, str) and job_id.isdigit(), job_id
        assert took < 3, f"the submission waited {took:.1f}s for the shell's exit"
        assert on_slurm(ssh, req) == [job_id]
    finally:
        ssh.cancel(job_id)


def test_a_staged_program_whose_go_is_not_taken_is_read_to_its_end_and_submits_nothing(
    fresh_ssh: SSHClient, ssh: SSHClient, scratch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its AXLE-ONE line comes without AXLE-READY (sbatch refused the empty script): that is no
    # answer to take early; the submission reads the program to its end, 2 s later here, and
    # says nothing was submitted.
    lingering(monkeypatch, 2)
    req = held(scratch, "not-taken")
    assert fresh_ssh.stage_one(req) is True
    fresh_ssh._spare.end = "AXLE-END-0000000000000000"  # the go sent will not be its end mark
    started = time.monotonic()
    answer = fresh_ssh.submit_many([req])[req.comment]
    took = time.monotonic() - started
    assert not isinstance(answer, str), answer
    assert "nothing was submitted" in str(answer), answer
    assert took >= 2, f"answered after {took:.1f}s, before the program's end"
    time.sleep(0.5)
    assert on_slurm(ssh, req) == []


@contextlib.contextmanager
def banner_without_newline():
    """The login account's ~/.bashrc prints a banner with no end of line before anything else
    (bash reads it for a command sshd runs): whatever the program prints first lands on its
    line. Put back as it was afterwards."""
    rc = Path(pwd.getpwnam("scientist").pw_dir) / ".bashrc"
    before = rc.read_bytes() if rc.exists() else None
    rc.write_bytes(b"printf 'Welcome to the cluster'\n" + (before or b""))
    try:
        yield
    finally:
        if before is None:
            rc.unlink()
        else:
            rc.write_bytes(before)


def test_a_login_banner_without_an_end_of_line_does_not_hide_a_submission(
    fresh_ssh: SSHClient, ssh: SSHClient, scratch: str
) -> None:
    # Each of the program's own lines starts a line of its own: glued to the banner, its
    # AXLE-READY went unseen, and a job sbatch had taken was answered "nothing was submitted"
    # (sent again: a second job). Checked with the banner gone (it garbles squeue's first line).
    staged, alone = held(scratch, "banner-staged"), held(scratch, "banner-alone")
    batch = [held(scratch, "banner-batch-0"), held(scratch, "banner-batch-1")]
    with banner_without_newline():
        assert fresh_ssh.stage_one(staged) is True
        answers = fresh_ssh.submit_many([staged])
        answers |= fresh_ssh.submit_many([alone])  # a job alone, on a command of its own
        answers |= fresh_ssh.submit_many(batch)  # the batch program
    try:
        for req in [staged, alone, *batch]:
            job_id = answers[req.comment]
            assert isinstance(job_id, str) and job_id.isdigit(), answers
            assert on_slurm(ssh, req) == [job_id]
    finally:
        for job_id in answers.values():
            if isinstance(job_id, str):
                ssh.cancel(job_id)
