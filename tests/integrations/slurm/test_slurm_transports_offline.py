"""Transport behaviour that needs no cluster: how a REST submission is described, how
tokens are minted, how failures are classified."""

from __future__ import annotations

import socket
import time
from dataclasses import replace

import jwt
import paramiko
import pytest

from apps.integrations.slurm import sbatch
from apps.integrations.slurm.base import (
    AmbiguousSubmitError,
    HostKeyError,
    SlurmRejected,
    SubmitRequest,
    TransportError,
    UnsupportedOperation,
    deadline,
)
from apps.integrations.slurm.rest import RestClient, _job_from_slurmdb, job_properties, mint_token
from apps.integrations.slurm.ssh import (
    CommandResult,
    PinnedHostKey,
    SSHClient,
    _ConnectionLost,
    _PinnedPolicy,
    fingerprint,
)


def req(script: str, *extra: str, env: dict[str, str] | None = None) -> SubmitRequest:
    return SubmitRequest(
        script=script,
        job_name="hub-name",
        comment="axle:1",
        workdir="/scratch/alice/jobs/1",
        env=env or {},
        extra_args=list(extra),
    )


def test_rest_sends_the_scripts_directives_as_job_properties() -> None:
    props = job_properties(
        req("#!/bin/bash\n#SBATCH -p debug -N 2 --ntasks-per-node 4\n#SBATCH -t 1:00:00 --mem=4G\necho\n")
    )
    assert props["partition"] == "debug"
    assert props["nodes"] == "2"
    assert props["tasks_per_node"] == "4"
    assert props["time_limit"] == "1:00:00"
    assert props["memory_per_node"] == "4G"
    assert props["name"] == "hub-name"
    assert props["comment"] == "axle:1"
    assert props["current_working_directory"] == "/scratch/alice/jobs/1"


def test_rest_uses_the_directives_validation_recorded_instead_of_reading_the_script(monkeypatch) -> None:
    script = "#!/bin/bash\n#SBATCH -p debug -t 10\n#SBATCH --mem=1G\necho\n"
    recorded = tuple(sbatch.parse_script(script)[0])
    monkeypatch.setattr(sbatch, "parse_script", lambda script: pytest.fail("the script was parsed again"))
    props = job_properties(replace(req(script, "--mem=2G"), script_directives=recorded))
    assert (props["partition"], props["time_limit"], props["memory_per_node"]) == ("debug", "10", "2G")
    assert props["name"] == "hub-name"


def test_rest_applies_the_hubs_options_over_the_script() -> None:
    props = job_properties(req("#SBATCH -o mine.out -J mine\n", "--output=/x/%j.out", "--hold"))
    assert props["standard_output"] == "/x/%j.out"
    assert props["hold"] is True
    assert props["name"] == "hub-name"


def test_a_hub_memory_option_replaces_the_scripts_other_memory_option_over_rest() -> None:
    props = job_properties(req("#SBATCH --mem-per-cpu=1G\n", "--mem=2G"))
    assert props["memory_per_node"] == "2G"
    assert "memory_per_cpu" not in props


def test_rest_jobs_get_a_minimal_environment_plus_parameters() -> None:
    props = job_properties(req("#!/bin/bash\n", env={"EPOCHS": "3"}))
    assert props["environment"]["EPOCHS"] == "3"
    assert "PATH" in props["environment"]


@pytest.mark.parametrize(
    "directive", ["--export=ALL", "--container=/c", "--bbf=bb.conf", "--nodefile=nodes", "--signal=B:USR1@60"]
)
def test_rest_refuses_options_slurmrestd_cannot_take_as_a_permanent_error(directive: str) -> None:
    with pytest.raises(SlurmRejected) as caught:
        job_properties(req(f"#SBATCH {directive}\n"))
    assert directive.split("=")[0] in caught.value.message and "line 1" in caught.value.message
    assert caught.value.permanent


def test_rest_sends_exclusive_and_signal_in_the_form_slurmrestd_takes() -> None:
    props = job_properties(req("#SBATCH --exclusive --signal=USR1@60\n"))
    assert (props["exclusive"], props["signal"]) == ("exclusive", "USR1@60")
    assert job_properties(req("#SBATCH --exclusive=user\n"))["exclusive"] == "user"


def test_rest_refuses_a_script_sbatch_could_not_read() -> None:
    with pytest.raises(SlurmRejected):
        job_properties(req("#SBATCH --no-such-option\n"))


def test_a_minted_token_names_the_user_and_expires_soon() -> None:
    token = mint_token(b"k" * 32, "alice", lifetime=60)
    claims = jwt.decode(token, b"k" * 32, algorithms=["HS256"])
    assert claims["sun"] == "alice"
    assert claims["exp"] - claims["iat"] == 60


def test_a_callers_deadline_cuts_the_rest_clients_timeout_in_its_submission_threads_too() -> None:
    # A server that accepts and never answers; the client's own timeout is 30 s.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        client = RestClient(f"http://127.0.0.1:{silent.getsockname()[1]}", "alice", token="t", timeout=30)
        started = time.monotonic()
        with deadline(0.5):
            answers = client.submit_many([req("#!/bin/bash\n")])
        assert time.monotonic() - started < 3
        assert isinstance(answers["axle:1"], AmbiguousSubmitError)


def test_rest_without_ssh_files_says_what_it_cannot_do_and_what_is_missing() -> None:
    client = RestClient("http://127.0.0.1:9", "alice", token="t")
    with pytest.raises(UnsupportedOperation) as caught:
        client.files.read("/x", 0, 10)
    assert caught.value.message.startswith("A REST-only grant (alice at http://127.0.0.1:9) cannot read /x: ")
    assert "An administrator must add an SSH key to the grant" in caught.value.message
    assert caught.value.permanent


def test_rest_maps_a_refused_connection_to_a_transient_transport_error() -> None:
    client = RestClient("http://127.0.0.1:9", "alice", token="t", timeout=2)
    with pytest.raises(TransportError) as caught:
        client.ping()
    assert not caught.value.permanent
    with pytest.raises(TransportError) as caught:
        client.submit(req("#!/bin/bash\n"))
    assert not isinstance(caught.value, AmbiguousSubmitError)


# ------------------------------------------------------------------ SSH


def _ed25519_line() -> tuple[str, paramiko.PKey]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    import io

    key = paramiko.Ed25519Key.from_private_key(io.StringIO(pem))
    return pem, key


def test_the_pinned_policy_accepts_the_pinned_key_by_fingerprint_or_known_hosts_line() -> None:
    _, key = _ed25519_line()
    for pin in (
        fingerprint(key),
        f"[127.0.0.1]:2222 {key.get_name()} {key.get_base64()}",
    ):
        _PinnedPolicy(PinnedHostKey.parse(pin)).missing_host_key(None, "h", key)  # type: ignore[arg-type]


def test_the_pinned_policy_refuses_any_other_key() -> None:
    _, key = _ed25519_line()
    _, other = _ed25519_line()
    policy = _PinnedPolicy(PinnedHostKey.parse(fingerprint(key)))
    with pytest.raises(HostKeyError):
        policy.missing_host_key(None, "h", other)  # type: ignore[arg-type]


def test_an_ssh_client_never_shows_its_key() -> None:
    pem, _ = _ed25519_line()
    client = SSHClient("127.0.0.1", 9, "alice", pem, host_key="SHA256:x")
    assert "PRIVATE" not in repr(client) and "PRIVATE" not in str(vars(client))


def test_a_connection_refused_is_a_transient_transport_error() -> None:
    pem, _ = _ed25519_line()
    client = SSHClient("127.0.0.1", 9, "alice", pem, host_key="SHA256:x", connect_timeout=2)
    with pytest.raises(TransportError) as caught:
        client.connect()
    assert not caught.value.permanent


def test_a_connection_lost_during_sbatch_is_ambiguous(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pem, _ = _ed25519_line()
    client = SSHClient("127.0.0.1", 9, "alice", pem, host_key="SHA256:x")

    def drop_at_sbatch(args: list[str], **kwargs: object) -> CommandResult:
        if any(word.endswith("/sbatch") for word in args):
            raise _ConnectionLost("reset by peer")
        return CommandResult(0, b"", b"")  # the job's environment file was written

    monkeypatch.setattr(client, "run", drop_at_sbatch)
    with pytest.raises(AmbiguousSubmitError):
        client.submit(req("#!/bin/bash\n"))


def test_a_connection_lost_before_sbatch_started_is_a_plain_transport_error(monkeypatch: pytest.MonkeyPatch) -> None:
    client = SSHClient("127.0.0.1", 9, "alice", _ed25519_line()[1], host_key="SHA256:x")

    def drop(*args: object, **kwargs: object) -> None:
        raise _ConnectionLost("reset by peer")

    monkeypatch.setattr(client, "run", drop)
    with pytest.raises(TransportError) as caught:
        client.submit(req("#!/bin/bash\n"))
    assert not isinstance(caught.value, AmbiguousSubmitError) and not caught.value.permanent


def test_a_file_operation_whose_kept_connection_died_is_tried_once_more(monkeypatch: pytest.MonkeyPatch) -> None:
    client = SSHClient("127.0.0.1", 9, "alice", _ed25519_line()[1], host_key="SHA256:x")
    calls: list[list[str]] = []

    def drop_once(args: list[str], **kwargs: object) -> CommandResult:
        calls.append(list(args))
        if len(calls) == 1:
            raise _ConnectionLost("Socket is closed")
        return CommandResult(0, b"", b"")

    monkeypatch.setattr(client, "run", drop_once)
    client.files.mkdir("/scratch/alice/x")
    assert calls == [["mkdir", "-p", "--", "/scratch/alice/x"]] * 2

    def drop(args: list[str], **kwargs: object) -> CommandResult:
        calls.append(list(args))
        raise _ConnectionLost("Socket is closed")

    calls.clear()
    monkeypatch.setattr(client, "run", drop)
    with pytest.raises(TransportError) as caught:
        client.files.mkdir("/scratch/alice/x")
    assert len(calls) == 2 and not caught.value.permanent and "Socket is closed" in str(caught.value)

    # A command that outlived its time limit may still be running: it is not started again.
    def too_slow(args: list[str], **kwargs: object) -> CommandResult:
        calls.append(list(args))
        raise _ConnectionLost("no answer within 60s", timed_out=True)

    calls.clear()
    monkeypatch.setattr(client, "run", too_slow)
    with pytest.raises(TransportError) as caught:
        client.files.mkdir("/scratch/alice/x")
    assert len(calls) == 1 and "no answer within 60s" in str(caught.value)


@pytest.mark.parametrize("name", ["LD_PRELOAD", "PATH", "SLURM_JOB_ID"])
def test_both_transports_refuse_a_job_environment_that_changes_how_programs_run(name: str) -> None:
    # Refused before anything is sent: port 9 would not answer anyway.
    with pytest.raises(SlurmRejected, match=name):
        RestClient("http://127.0.0.1:9", "alice", token="t").submit(req("#!/bin/bash\n", env={name: "/tmp/x"}))
    ssh = SSHClient("127.0.0.1", 9, "alice", _ed25519_line()[1], host_key="SHA256:x")
    with pytest.raises(SlurmRejected, match=name):
        ssh.submit(req("#!/bin/bash\n", env={name: "/tmp/x"}))


def test_the_ssh_transport_names_slurms_programs_by_absolute_path_in_a_fixed_environment() -> None:
    ssh = SSHClient("127.0.0.1", 9, "alice", _ed25519_line()[1], host_key="SHA256:x", slurm_bin_dir="/opt/slurm/bin")
    assert ssh.slurm_command(["squeue", "--me"]) == [
        "/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "/opt/slurm/bin/squeue", "--me"
    ]  # fmt: skip
    with pytest.raises(ValueError):
        ssh.slurm_command(["rm", "-rf", "/"])
    with pytest.raises(TransportError):
        SSHClient("127.0.0.1", 9, "alice", _ed25519_line()[1], host_key="SHA256:x", slurm_bin_dir="bin")


@pytest.mark.parametrize(
    ("exit_code", "state", "expected"),
    [
        ({"status": "SUCCESS", "return_code": 0}, "COMPLETED", 0),
        # slurmrestd 22.05 says this of a job that exited 3 (sacct: 3:0): not believed
        ({"status": "SUCCESS", "return_code": 0}, "FAILED", None),
        ({"status": "FAILED", "return_code": 3}, "FAILED", 3),
        # later data parsers: the number with its "set" flag
        ({"status": ["EXITED"], "return_code": {"set": True, "infinite": False, "number": 3}}, "FAILED", 3),
        ({"status": ["PENDING"], "return_code": {"set": False, "infinite": False, "number": 0}}, "PENDING", None),
        ({}, "RUNNING", None),
    ],
)
def test_rest_accounting_exit_codes(exit_code: dict, state: str, expected: int | None) -> None:
    job = _job_from_slurmdb({"job_id": 7, "state": {"current": state}, "exit_code": exit_code})
    assert (job.state, job.exit_code) == (state, expected)


def test_wrap_among_the_hubs_own_options_is_refused_before_anything_is_sent() -> None:
    # A job's script is its stdin, which a one-job program gives sbatch only at its go; with
    # --wrap sbatch would submit without reading it.
    from apps.integrations.slurm import environment
    from apps.integrations.slurm.ssh import _sbatch_words

    for wrap in (["--wrap", "hostname"], ["--wrap=hostname"]):
        with pytest.raises(environment.EnvironmentRefused, match="--wrap"):
            _sbatch_words(req("#!/bin/sh\ntrue\n", *wrap), ["--parsable"])
    assert _sbatch_words(req("#!/bin/sh\ntrue\n", "--hold"), ["--parsable"])[1][-1] == "--hold"


def test_a_one_job_answer_is_whole_only_with_its_go_taken_and_its_last_line_ended():
    from apps.integrations.slurm.ssh import _one_answered

    answered = _one_answered("axle-m1")
    assert answered(b"AXLE-READY\n4242\n\nAXLE-ONE\taxle-m1\t0\t\n")
    assert not answered(b"AXLE-READY\n4242\n\nAXLE-ONE\taxle-m1\t0\t")  # its line not ended yet
    assert not answered(b"\nAXLE-ONE\taxle-m1\t1\tZXJy\n")  # no go taken: waited for to its end
    assert not answered(b"AXLE-READY\n\nAXLE-ONE\taxle-m2\t0\t\n")  # another job's
    assert not answered(b"\nAXLE-ONE\taxle-m1\t0\t\nAXLE-READY\n")  # READY must come first
