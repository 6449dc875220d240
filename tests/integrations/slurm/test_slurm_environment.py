"""A job's environment reaches the job, never the commands the hub runs on the login node
(issue 9, finding 2): the rule for names, the file sbatch reads, and the real cluster."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from apps.integrations.slurm import environment
from apps.integrations.slurm.base import SlurmError, SlurmRejected, SubmitRequest
from apps.integrations.slurm.ssh import SSHClient

from .conftest import wait_for

# ------------------------------------------------------------------ the rule


@pytest.mark.parametrize(
    "name",
    ["PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONSTARTUP", "BASH_ENV", "ENV", "IFS", "HOME",
     "SHELL", "SLURM_JOB_ID", "SBATCH_PARTITION", "SRUN_CPUS_PER_TASK", "SALLOC_PARTITION", "PERL5OPT", "RUBYOPT",
     "NODE_OPTIONS", "GIT_SSH_COMMAND", "https_proxy", "Path", "CUDA_VISIBLE_DEVICES", "JAVA_TOOL_OPTIONS"],
)  # fmt: skip
def test_names_that_change_how_programs_run_are_refused(name: str) -> None:
    assert "changes how programs run" in (environment.parameter_name_problem(name) or "")
    assert environment.runtime_name_problem(name)


@pytest.mark.parametrize("name", ["MLFLOW_RUN_ID", "AXLE_JOB_ID", "mlflow_tracking_uri"])
def test_the_hubs_own_names_are_refused_as_parameters_but_reach_the_job(name: str) -> None:
    assert "prefix the hub sets" in (environment.parameter_name_problem(name) or "")
    assert environment.runtime_name_problem(name) is None


@pytest.mark.parametrize("name", ["", "1A", "A-B", "A B", "A=B", "Ä", "A\n", "X" * 65, 3, None])
def test_names_must_be_plain_identifiers(name: object) -> None:
    assert "cannot be an environment variable name" in (environment.parameter_name_problem(name) or "")


@pytest.mark.parametrize("name", ["EPOCHS", "learning_rate", "_x", "DATA_DIR", "PATHS_FILE", "MY_PATH", "LDA_K"])
def test_ordinary_parameter_names_are_accepted(name: str) -> None:
    assert environment.parameter_name_problem(name) is None


def test_the_export_file_is_nul_separated_so_any_value_stays_one_value() -> None:
    env = {"A": "x\ny=1", "B": "", "C": "$(id);`id`,'q'"}
    assert environment.export_file(env) == b"A=x\ny=1\x00B=\x00C=$(id);`id`,'q'\x00"


def test_the_export_file_refuses_what_no_environment_can_hold() -> None:
    with pytest.raises(environment.EnvironmentRefused, match="NUL"):
        environment.export_file({"A": "x\x00y"})
    with pytest.raises(environment.EnvironmentRefused, match="changes how programs run"):
        environment.export_file({"LD_PRELOAD": "/tmp/x.so"})


# ------------------------------------------------------------------ on the cluster

ECHO = """#!/bin/bash
#SBATCH --time=1
printf 'note=[%s]\\n' "$NOTE"
printf 'run=[%s]\\n' "$MLFLOW_RUN_ID"
printf 'home=[%s] user=[%s]\\n' "$HOME" "$USER"
printf 'name=[%s]\\n' "$SLURM_JOB_NAME"
"""


class Recording(SSHClient):
    """The hub's SSH client, keeping every command line it sends (what `ps` would show)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[str] = []

    def _exec(self, command: str, **kwargs):
        self.commands.append(command)
        return super()._exec(command, **kwargs)


@pytest.fixture
def recording(cluster: dict[str, str]) -> Recording:
    from .conftest import _host_key, private_key

    client = Recording(
        cluster.get("AXLE_LOCAL_SSH_HOST", "127.0.0.1"),
        int(cluster.get("AXLE_LOCAL_SSH_PORT", "2222")),
        "scientist",
        private_key(cluster),
        host_key=_host_key(cluster),
    )
    yield client
    client.close()


def sbatch_folder(ssh: SSHClient, folder: str, program: str) -> str:
    """Make `folder` on the login node holding `program` as its sbatch; returns the folder."""
    assert ssh.run(["mkdir", "-p", folder]).exit_status == 0
    assert ssh.run(["/bin/sh", "-c", 'cat > "$1" && chmod 755 "$1"', "sh", f"{folder}/sbatch"], stdin=program.encode())
    return folder


@pytest.fixture
def fake_sbatch(ssh: SSHClient, scratch: str) -> tuple[str, str]:
    """A folder holding a program named sbatch that, as sbatch does, reads its script from
    stdin to its end and refuses an empty one; given one, it leaves a mark (the job it would
    have submitted) and claims job 4242."""
    folder = f"{scratch}/fakebin-{uuid.uuid4().hex[:6]}"
    mark = f"{folder}/ran"
    fake = (
        "#!/bin/sh\n"
        'script=$(cat)\n[ -n "$script" ] || { echo "sbatch: error: Batch script is empty!" >&2; exit 1; }\n'
        f"touch {mark}\necho 4242\n"
    )
    return sbatch_folder(ssh, folder, fake), mark


def exists(ssh: SSHClient, path: str) -> bool:
    return ssh.run(["test", "-e", path]).exit_status == 0


@pytest.mark.slurm
def test_a_jobs_environment_reaches_it_and_no_command_line(recording: Recording, ssh: SSHClient, scratch: str) -> None:
    secret = f"token-{uuid.uuid4().hex}"
    note = f"a b; $(touch {scratch}/pwned) `id` 'q' \"d\"\nsecond, line=2"
    job_id = recording.submit(
        SubmitRequest(
            script=ECHO,
            job_name="env-echo",
            comment=f"axle-test:{uuid.uuid4().hex}",
            workdir=scratch,
            env={"NOTE": note, "MLFLOW_RUN_ID": secret},
            extra_args=[f"--output={scratch}/%x-%j.out"],
        )
    )
    wait_for(lambda: ssh.accounting([job_id]), lambda jobs: bool(jobs) and jobs[0].state == "COMPLETED")
    log, _ = ssh.files.read(f"{scratch}/env-echo-{job_id}.out")
    assert log.decode() == (
        f"note=[{note}]\nrun=[{secret}]\nhome=[/home/scientist] user=[scientist]\nname=[env-echo]\n"
    )
    assert not exists(ssh, f"{scratch}/pwned")
    # What every user of the login node can see: the commands, never a value.
    assert recording.commands and not any(secret in c or "second, line" in c for c in recording.commands)
    assert any(c.startswith("/bin/sh -c") and "/usr/bin/sbatch --parsable" in c for c in recording.commands)
    # The file sbatch read is gone once it was opened.
    assert ssh.run(["/bin/sh", "-c", 'ls -A "$1" | grep -c axle-env', "sh", scratch]).out.strip() == "0"


@pytest.mark.slurm
def test_a_batch_gives_each_job_its_own_script_and_environment_byte_for_byte(
    recording: Recording, ssh: SSHClient, scratch: str
) -> None:
    # One `submit_many`: the scripts and variables are written by the shell's printf from
    # octal escapes, the login environment once for the jobs that set the same names.
    tag = uuid.uuid4().hex[:8]
    secrets_ = [f"token-{uuid.uuid4().hex}" for _ in range(3)]
    notes = [
        "plain",
        f"a b; $(touch {scratch}/pwned) `id` 'q' \"d\" 100% \\n back\\slash\nsecond, line=2 \u00e9\u4e2d",
        "\t tab and %s %d %% \x01 control",
    ]
    # An odd script: a percent sign, quotes, a backslash, UTF-8, a control byte, and no newline at the end.
    odd = ECHO.replace("#SBATCH --time=1\n", "#SBATCH --time=1\n# 100% 'quoted' \\ back \u00e9t\u00e9 \x07\n").rstrip(
        "\n"
    )
    reqs = [
        SubmitRequest(
            script=ECHO if i != 2 else odd,
            job_name=f"batch-env-{i}",
            comment=f"axle-test:{tag}:{i}",
            workdir=scratch,
            env={"NOTE": notes[i], "MLFLOW_RUN_ID": secrets_[i]}
            if i != 1
            else {"NOTE": notes[i], "MLFLOW_RUN_ID": secrets_[i], "EXTRA": "x"},
            extra_args=[f"--output={scratch}/%x-%j.out"],
        )
        for i in range(3)
    ]
    # A fourth job whose folder cannot be made fails alone, before sbatch.
    blocked = f"{scratch}/file-{tag}"
    assert ssh.run(["touch", blocked]).exit_status == 0
    reqs.append(
        SubmitRequest(script=ECHO, job_name="batch-env-3", comment=f"axle-test:{tag}:3", workdir=f"{blocked}/sub")
    )
    answers = recording.submit_many(reqs)
    failed = answers.pop(f"axle-test:{tag}:3")
    assert isinstance(failed, SlurmError) and not isinstance(failed, SlurmRejected), failed
    assert "Cannot prepare the job's folder" in str(failed) and "Not a directory" in str(failed), failed
    ids = [answers[f"axle-test:{tag}:{i}"] for i in range(3)]
    assert all(isinstance(job_id, str) and job_id.isdigit() for job_id in ids), answers
    # sbatch got each script exactly as sent (no newline added to the one without).
    stored = ssh.run(["scontrol", "write", "batch_script", ids[2], "-"]).stdout
    assert stored == odd.encode(), stored
    wait_for(lambda: ssh.accounting(ids), lambda jobs: len(jobs) == 3 and all(j.state == "COMPLETED" for j in jobs))
    for i, job_id in enumerate(ids):
        log, _ = ssh.files.read(f"{scratch}/batch-env-{i}-{job_id}.out")
        assert log.decode() == (
            f"note=[{notes[i]}]\nrun=[{secrets_[i]}]\nhome=[/home/scientist] user=[scientist]\nname=[batch-env-{i}]\n"
        ), log
    assert not exists(ssh, f"{scratch}/pwned")
    # What every user of the login node can see: the commands, never a value.
    assert recording.commands and not any(s in c for c in recording.commands for s in secrets_)
    assert not any("second, line" in c for c in recording.commands)
    # The batch's private folder (scripts, environment files) is gone.
    left = ssh.run(["/bin/sh", "-c", 'ls -d "${TMPDIR:-/tmp}"/axle-batch-* 2>/dev/null | wc -l']).out.strip()
    assert left == "0", left


@pytest.mark.slurm
def test_a_big_batch_gives_every_job_its_own_variables_and_reads_the_id_on_sbatchs_last_line(
    ssh_factory: Callable[..., SSHClient], ssh: SSHClient, scratch: str
) -> None:
    # A site's sbatch wrapper that greets first; it answers each job with an id made of the
    # job's own variable, read from the environment file sbatch gets (fd 3). 150 jobs setting
    # the same names: the login environment goes to their files in slices (one `tee` holds a
    # file open for each).
    folder = f"{scratch}/wrapper-{uuid.uuid4().hex[:6]}"
    wrapper = (
        "#!/bin/sh\necho 'Welcome to the cluster'\necho\n"
        "n=$(tr '\\000' '\\n' <&3 | sed -n 's/^AXLE_I=//p')\necho $((4000 + n))\n"
    )
    sbatch_folder(ssh, folder, wrapper)
    tag = uuid.uuid4().hex[:8]
    reqs = [
        SubmitRequest(
            script="#!/bin/bash\ntrue\n",
            job_name="wrapped",
            comment=f"axle-test:{tag}:{i}",
            workdir=scratch,
            env={"AXLE_I": str(i), "SECRET": f"s-{i}"},
        )
        for i in range(150)
    ]
    with ssh_factory(slurm_bin_dir=folder) as client:
        answers = client.submit_many(reqs)
    assert answers == {f"axle-test:{tag}:{i}": str(4000 + i) for i in range(150)}


@pytest.mark.slurm
def test_a_batch_of_one_job_gives_it_its_script_and_environment_byte_for_byte_and_writes_no_file(
    recording: Recording, ssh: SSHClient, scratch: str
) -> None:
    # One job: `_ONE_LIBRARY` (pipes, no private folder, no environment file), with what a
    # batch guarantees: the script and variables byte for byte, the job's folder made,
    # nothing on a command line, nothing left on disk.
    from apps.integrations.slurm import ssh as ssh_module

    tag = uuid.uuid4().hex[:8]
    secret = f"token-{uuid.uuid4().hex}"
    note = f"a b; $(touch {scratch}/pwned) `id` 'q' \"d\" 100% \\n back\\slash\nsecond, line=2 \u00e9\t\x01"
    odd = ECHO.replace("#SBATCH --time=1\n", "#SBATCH --time=1\n# 100% 'quoted' \\ back \u00e9t\u00e9 \x07\n").rstrip(
        "\n"
    )
    folder = f"{scratch}/new-{tag}/deeper"  # missing: made by the program
    req = SubmitRequest(
        script=odd,
        job_name="one-env",
        comment=f"axle-test:{tag}",
        workdir=folder,
        env={"NOTE": note, "MLFLOW_RUN_ID": secret},
        extra_args=[f"--output={folder}/%x-%j.out"],
    )
    sent = []
    real_run = recording.run

    def run(args, **kwargs):
        sent.append(kwargs.get("stdin") or b"")
        return real_run(args, **kwargs)

    recording.run = run
    answers = recording.submit_many([req])
    job_id = answers[req.comment]
    assert isinstance(job_id, str) and job_id.isdigit(), answers
    assert b"one " in sent[0] and b"go 0" not in sent[0], "a batch of one job takes the one-job program"
    assert ssh.run(["scontrol", "write", "batch_script", job_id, "-"]).stdout == odd.encode()
    wait_for(lambda: ssh.accounting([job_id]), lambda jobs: bool(jobs) and jobs[0].state == "COMPLETED")
    log, _ = ssh.files.read(f"{folder}/one-env-{job_id}.out")
    assert log.decode() == (
        f"note=[{note}]\nrun=[{secret}]\nhome=[/home/scientist] user=[scientist]\nname=[one-env]\n"
    ), log
    assert not exists(ssh, f"{scratch}/pwned")
    assert recording.commands and not any(secret in c or "second, line" in c for c in recording.commands)
    # Nothing but the job's log in its folder, no private folder of the batch's.
    assert ssh.run(["ls", "-A", folder]).out.split() == [f"one-env-{job_id}.out"]
    left = ssh.run(["/bin/sh", "-c", 'ls -d "${TMPDIR:-/tmp}"/axle-batch-* 2>/dev/null | wc -l']).out.strip()
    assert left == "0", left
    assert ssh_module._ONE_LIBRARY.count("mkdir") == 1  # only for a missing job folder


@pytest.mark.slurm
def test_a_batch_of_one_job_answers_with_slurms_refusal_or_the_folders_reason(
    ssh_factory: Callable[..., SSHClient], ssh: SSHClient, scratch: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    refused = SubmitRequest(
        script="#!/bin/bash\ntrue\n",
        job_name="one-refused",
        comment=f"axle-test:{tag}:r",
        workdir=scratch,
        extra_args=["--partition=no-such-partition", "-t", "1"],
    )
    blocked = f"{scratch}/file-{tag}"
    assert ssh.run(["touch", blocked]).exit_status == 0
    unwritable = SubmitRequest(
        script="#!/bin/bash\ntrue\n", job_name="one-blocked", comment=f"axle-test:{tag}:b", workdir=f"{blocked}/sub"
    )
    with ssh_factory() as client:
        answer = client.submit_many([refused])[refused.comment]
        assert isinstance(answer, SlurmRejected), answer
        assert "invalid partition" in str(answer).lower() and "no-such-partition" in str(answer), answer
        failed = client.submit_many([unwritable])[unwritable.comment]
    assert isinstance(failed, SlurmError) and not isinstance(failed, SlurmRejected), failed
    assert "Cannot prepare the job's folder" in str(failed) and "Not a directory" in str(failed), failed
    assert not ssh.find_by_comments([refused.comment, unwritable.comment])


@pytest.mark.slurm
def test_a_batch_of_one_job_reads_the_id_on_sbatchs_last_line_and_gives_sbatch_the_login_and_job_variables(
    ssh_factory: Callable[..., SSHClient], ssh: SSHClient, scratch: str
) -> None:
    # A site's wrapper that takes the job's script from stdin (as sbatch does, and as a
    # wrapper passing it on to sbatch must), greets, and answers with what it read on fd 3
    # (the environment file's pipe): the job's variable, the login's HOME, and no Slurm
    # variable of the login's nor the login's value of a name the job sets.
    folder = f"{scratch}/wrapper-{uuid.uuid4().hex[:6]}"
    wrapper = (
        "#!/bin/sh\ncat >/dev/null\necho 'Welcome to the cluster'\necho\n"
        "tr '\\000' '\\n' <&3 >\"$0.env\"\n"
        "i=$(sed -n 's/^AXLE_I=//p' \"$0.env\"); h=$(grep -c '^HOME=' \"$0.env\"); "
        "s=$(grep -c '^SLURM_CONF=' \"$0.env\"); l=$(grep -c '^SHLVL=' \"$0.env\")\n"
        "echo $((4000 + i * 1000 + h * 100 + s * 10 + l))\n"
    )
    sbatch_folder(ssh, folder, wrapper)
    req = SubmitRequest(
        script="#!/bin/bash\ntrue\n",
        job_name="wrapped",
        comment=f"axle-test:{uuid.uuid4().hex}",
        workdir=scratch,
        env={"AXLE_I": "7", "SHLVL": "job-value"},
    )
    # The login session has a SLURM_CONF (the stack sets one) and a SHLVL, which sbatch would pass on.
    login = ssh.run(["/bin/sh", "-c", "env | grep -c -e ^SLURM_CONF= -e ^SHLVL="]).out.strip()
    assert login == "2", login
    with ssh_factory(slurm_bin_dir=folder) as client:
        answers = client.submit_many([req])
    # i=7, HOME once, no SLURM_CONF, SHLVL once (the job's only).
    assert answers == {req.comment: str(4000 + 7000 + 100 + 0 + 1)}, answers
    env_seen = ssh.run(["cat", f"{folder}/sbatch.env"]).out
    assert "SHLVL=job-value\n" in env_seen and env_seen.count("SHLVL=") == 1, env_seen


@pytest.mark.slurm
def test_a_batch_of_one_job_cut_short_submits_nothing(
    ssh_factory: Callable[..., SSHClient], ssh: SSHClient, scratch: str, fake_sbatch: tuple[str, str]
) -> None:
    # Its go line cut: sbatch, started with the program, never gets its script.
    folder, mark = fake_sbatch
    req = SubmitRequest(
        script="#!/bin/bash\ntrue\n", job_name="cut", comment=f"axle-test:{uuid.uuid4().hex}", workdir=scratch
    )
    with ssh_factory(slurm_bin_dir=folder) as client:
        real_run = client.run

        def run(args, *, stdin=None, timeout=None):
            return real_run(args, stdin=stdin[:-5] if stdin else stdin, timeout=timeout)

        client.run = run
        answer = client.submit_many([req])[req.comment]
    assert isinstance(answer, SlurmError) and "nothing was submitted" in str(answer), answer
    assert not exists(ssh, mark)


@pytest.mark.slurm
def test_a_connections_first_batch_removes_the_folders_killed_batches_left(
    ssh_factory: Callable[..., SSHClient], ssh: SSHClient, scratch: str, fake_sbatch: tuple[str, str]
) -> None:
    # A batch killed with SIGKILL leaves its private folder (its trap never ran): the next
    # connection's first batch removes those older than ten minutes, and leaves a fresh one.
    tmp = ssh.run(["/bin/sh", "-c", 'printf %s "${TMPDIR:-/tmp}"']).out
    old, fresh = f"{tmp}/axle-batch-killed{uuid.uuid4().hex[:6]}", f"{tmp}/axle-batch-young{uuid.uuid4().hex[:6]}"
    script = 'mkdir -m 700 "$1" "$2" && touch "$1/0.e" && touch -d "20 minutes ago" "$1/0.e" "$1"'
    assert ssh.run(["/bin/sh", "-c", script, "sh", old, fresh]).exit_status == 0
    folder, _ = fake_sbatch
    req = SubmitRequest(
        script="#!/bin/bash\ntrue\n", job_name="tidy", comment=f"axle-test:{uuid.uuid4().hex}", workdir=scratch
    )
    with ssh_factory(slurm_bin_dir=folder) as client:
        assert client.submit_many([req]) == {req.comment: "4242"}
        deadline = time.monotonic() + 10
        while exists(ssh, old) and time.monotonic() < deadline:
            time.sleep(0.1)  # the `find` runs in the background
        assert not exists(ssh, old) and exists(ssh, fresh)
    ssh.run(["rm", "-rf", "--", fresh])


@pytest.mark.slurm
def test_a_path_in_the_jobs_environment_cannot_choose_the_program(
    ssh_factory: Callable[..., SSHClient], ssh: SSHClient, scratch: str, fake_sbatch: tuple[str, str]
) -> None:
    folder, mark = fake_sbatch
    request = SubmitRequest(
        script="#!/bin/bash\n#SBATCH -t 1\ntrue\n",
        job_name="path",
        comment=f"axle-test:{uuid.uuid4().hex}",
        workdir=scratch,
        env={"PATH": f"{folder}:/usr/bin:/bin"},
    )
    with ssh_factory() as client, pytest.raises(SlurmRejected, match="PATH changes how programs run"):
        client.submit(request)
    with ssh_factory() as client, pytest.raises(SlurmRejected, match="LD_PRELOAD"):
        client.submit(SubmitRequest(**{**request.__dict__, "env": {"LD_PRELOAD": f"{folder}/x.so"}}))
    assert not exists(ssh, mark)


@pytest.mark.slurm
def test_the_cluster_setting_not_the_users_path_names_slurms_commands(
    ssh_factory: Callable[..., SSHClient], ssh: SSHClient, scratch: str, fake_sbatch: tuple[str, str]
) -> None:
    folder, mark = fake_sbatch
    request = SubmitRequest(
        script="#!/bin/bash\n#SBATCH -t 1\ntrue\n",
        job_name="bin-dir",
        comment=f"axle-test:{uuid.uuid4().hex}",
        workdir=scratch,
        env={"EPOCHS": "3"},
    )
    with ssh_factory() as client:
        job_id = client.submit(request)
    assert job_id != "4242" and not exists(ssh, mark)
    # Pointing the cluster's setting at the folder is what makes the hub run that sbatch.
    with ssh_factory(slurm_bin_dir=folder) as client:
        assert client.submit(request) == "4242"
    assert exists(ssh, mark)


# ------------------------------------------------------------------ the file left behind


@pytest.mark.slurm
def test_a_connection_lost_before_sbatch_starts_leaves_no_environment_file(
    ssh: SSHClient, scratch: str, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.integrations.slurm import ssh as ssh_module
    from apps.integrations.slurm.base import AmbiguousSubmitError

    real_run = ssh.run
    seen_before_sbatch: list[str] = []

    def run(args, **kwargs):
        if list(args[:3]) == ["/bin/sh", "-c", ssh_module._SBATCH_WITH_ENV]:
            seen_before_sbatch.append(real_run(["ls", "-A", scratch]).out)
            raise ssh_module._ConnectionLost("the network went away")  # sbatch never started
        return real_run(args, **kwargs)

    monkeypatch.setattr(ssh, "run", run)
    with pytest.raises(AmbiguousSubmitError):
        ssh.submit(
            SubmitRequest(
                script="#!/bin/bash\ntrue\n", job_name="lost", comment=marker, workdir=scratch,
                env={"AXLE_JOB_TOKEN": "secret"}, extra_args=["--hold", "-t", "1", f"--output={scratch}/%j.out"],
            )
        )  # fmt: skip
    monkeypatch.undo()
    assert ".axle-env-" in seen_before_sbatch[0], "the file was written before the connection broke"
    assert ".axle-env-" not in ssh.run(["ls", "-A", scratch]).out


@pytest.mark.slurm
def test_an_environment_file_an_earlier_attempt_could_not_remove_goes_with_the_next_submission(
    ssh: SSHClient, scratch: str, marker: str
) -> None:
    old, fresh = f"{scratch}/.axle-env-0000000000000000", f"{scratch}/.axle-env-1111111111111111"
    assert ssh.run(["touch", "-d", "20 minutes ago", old]).exit_status == 0
    assert ssh.run(["touch", fresh]).exit_status == 0
    job_id = ssh.submit(
        SubmitRequest(
            script="#!/bin/bash\ntrue\n", job_name="next", comment=marker, workdir=scratch,
            extra_args=["--hold", "-t", "1", f"--output={scratch}/%j.out"],
        )
    )  # fmt: skip
    ssh.cancel(job_id)
    listing = ssh.run(["ls", "-A", scratch]).out.split()
    assert ".axle-env-0000000000000000" not in listing and ".axle-env-1111111111111111" in listing
