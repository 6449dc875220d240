"""`ClusterFiles`, the cluster's file system as the grant's user, against the real login node
(compose/local's sshd), through `client.files` of both transports (REST pairs the SSH layer)."""

from __future__ import annotations

import hashlib
import os
import time
import uuid

import paramiko
import pytest

from apps.integrations.slurm.base import (
    ClusterFiles,
    FileEntry,
    RemoteCommandFailed,
    RemoteFileMissing,
    SlurmClient,
    UnsupportedOperation,
)
from apps.integrations.slurm.rest import RestClient
from apps.integrations.slurm.ssh import IDLE_WAKE_SECONDS, SSHClient

pytestmark = pytest.mark.slurm


@pytest.fixture
def files(slurm: SlurmClient) -> ClusterFiles:
    assert isinstance(slurm.files, ClusterFiles)
    return slurm.files


@pytest.fixture
def folder(scratch: str) -> str:
    """A fresh folder below the scratch folder, with a name a shell would act on."""
    return f"{scratch}/files-{uuid.uuid4().hex[:8]}/odd $(touch PWNED) name"


def inode(ssh: SSHClient, path: str) -> str:
    result = ssh.run(["stat", "-c", "%i", "--", path])
    assert result.exit_status == 0, result.err
    return result.out.strip()


def test_it_writes_a_file_atomically_creating_its_folder(files: ClusterFiles, ssh: SSHClient, folder: str) -> None:
    path = f"{folder}/params.json"
    files.write(path, b'{"lr": 0.1}\n', mode=0o600)
    first = inode(ssh, path)
    files.write(path, b'{"lr": 0.2}\n')
    # A rename puts a new file in place: a reader that opened the old one keeps it whole.
    assert inode(ssh, path) != first
    assert files.read(path) == (b'{"lr": 0.2}\n', 12)
    assert ssh.run(["stat", "-c", "%a", "--", path]).out.strip() == "644"
    # Nothing left behind: no temporary file, and the $(...) in the name ran nothing.
    assert [e.name for e in files.list(folder)] == ["params.json"]
    assert ssh.run(["test", "-e", "PWNED"]).exit_status == 1


def test_a_failed_write_leaves_no_temporary_file(files: ClusterFiles, folder: str) -> None:
    files.mkdir(f"{folder}/taken")
    files.write(f"{folder}/keep.txt", b"kept")
    with pytest.raises(RemoteCommandFailed) as caught:
        files.write(f"{folder}/taken", b"would replace a folder")
    assert f"Could not write {folder}/taken" in caught.value.message
    assert files.stat(f"{folder}/taken").kind == "dir"
    assert files.list(folder) == [FileEntry("keep.txt", 4)]


def test_it_reads_by_byte_offset(files: ClusterFiles, folder: str) -> None:
    path = f"{folder}/log.txt"
    files.write(path, b"0123456789")
    assert files.read(path, 0, 3) == (b"012", 3)
    assert files.read(path, 3, 4) == (b"3456", 7)
    assert files.read(path, 7, 100) == (b"789", 10)
    assert files.read(path, 10, 100) == (b"", 10)
    with pytest.raises(RemoteFileMissing):
        files.read(f"{folder}/nothing.txt")


def test_it_lists_every_file_below_a_folder_with_its_size(files: ClusterFiles, folder: str) -> None:
    files.write(f"{folder}/b.txt", b"bb")
    files.write(f"{folder}/sub dir/a.txt", b"a")
    files.write(f"{folder}/-dash\nnewline", b"odd")
    files.mkdir(f"{folder}/empty/deeper")
    assert files.list(folder) == [
        FileEntry("-dash\nnewline", 3),
        FileEntry("b.txt", 2),
        FileEntry("sub dir/a.txt", 1),
    ]
    with pytest.raises(RemoteFileMissing):
        files.list(f"{folder}/nothing")


def test_it_stats_files_and_folders(files: ClusterFiles, folder: str) -> None:
    files.write(f"{folder}/five", b"12345")
    stat = files.stat(f"{folder}/five")
    assert (stat.kind, stat.size) == ("file", 5)
    assert stat.mtime.tzinfo is not None
    assert files.stat(folder).kind == "dir"
    with pytest.raises(RemoteFileMissing):
        files.stat(f"{folder}/nothing")


def test_its_sha256_is_computed_on_the_cluster_and_equals_hashlibs(files: ClusterFiles, folder: str) -> None:
    data = os.urandom(3 << 20)
    files.write(f"{folder}/image.sif", data)
    assert files.sha256(f"{folder}/image.sif") == hashlib.sha256(data).hexdigest()
    with pytest.raises(RemoteFileMissing):
        files.sha256(f"{folder}/nothing.sif")
    with pytest.raises(RemoteFileMissing):
        files.sha256(folder)  # a folder has no checksum of its own


def test_it_hashes_many_files_in_one_call_as_sha256sum_prints_them(
    files: ClusterFiles, ssh: SSHClient, folder: str
) -> None:
    files.write(f"{folder}/b.txt", b"bb")
    files.write(f"{folder}/sub dir/a.txt", b"a")
    files.write(f"{folder}/new\nline", b"odd")
    names = [e.name for e in files.list(folder)]
    lines = files.sha256_many(folder, names)
    # Byte for byte what sha256sum prints by hand, escaped name included, in the order asked.
    by_hand = ssh.run(
        ["/bin/sh", "-c", 'cd -- "$1" && sha256sum -- b.txt "$2" "sub dir/a.txt"', "sh", folder, "new\nline"]
    )
    assert b"".join(line + b"\n" for line in lines) == by_hand.stdout
    assert names == ["b.txt", "new\nline", "sub dir/a.txt"]
    assert lines[0] == hashlib.sha256(b"bb").hexdigest().encode() + b"  b.txt"
    assert files.sha256_many(folder, []) == []
    with pytest.raises(RemoteFileMissing):
        files.sha256_many(f"{folder}/nothing", ["a"])
    with pytest.raises(RemoteCommandFailed) as caught:
        files.sha256_many(folder, ["b.txt", "not-there"])
    assert "not-there" in caught.value.detail


def test_a_command_that_ends_before_reading_its_input_still_answers(files: ClusterFiles, folder: str) -> None:
    # `cd` fails and the remote side closes while the names (4 MB, more than SSH's window) are
    # still being sent: that is the command's answer, not a lost connection.
    names = [f"name-{i:014d}" for i in range(200_000)]
    for _ in range(3):
        with pytest.raises(RemoteFileMissing):
            files.sha256_many(f"{folder}/nothing", names)


def test_its_commands_take_every_word_literally(files: ClusterFiles) -> None:
    result = files.run(["printf", "%s|", "$(id)", "a b", "; echo no"])
    assert (result.exit_status, result.stdout) == (0, b"$(id)|a b|; echo no|")


def test_a_rest_only_client_says_for_every_operation_what_it_lacks(rest: RestClient) -> None:
    rest_only = RestClient(rest.base_url, "scientist", token="unused")
    calls = {
        "run a command on the cluster": lambda f: f.run(["true"]),
        "read /x": lambda f: f.read("/x"),
        "write /x": lambda f: f.write("/x", b""),
        "create the folder /x": lambda f: f.mkdir("/x"),
        "look at /x": lambda f: f.stat("/x"),
        "checksum /x": lambda f: f.sha256("/x"),
        "list /x": lambda f: f.list("/x"),
        "checksum the files in /x": lambda f: f.sha256_many("/x", ["a"]),
    }
    for what, call in calls.items():
        with pytest.raises(UnsupportedOperation) as caught:
            call(rest_only.files)
        assert caught.value.message == (
            f"A REST-only grant (scientist at {rest.base_url}) cannot {what}: slurmrestd has no file API, "
            "so files on the cluster are reached over SSH on its login node. An administrator must add "
            "an SSH key to the grant (and a login host with a confirmed host key to the cluster)."
        )


# ---------------------------------------------------------------- reads over SFTP


@pytest.fixture
def fresh_ssh(ssh_factory) -> SSHClient:
    client = ssh_factory()
    yield client
    client.close()


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What each channel opened on any connection is used for: the command or subsystem."""
    opened: list[str] = []
    exec_command, invoke_subsystem = paramiko.Channel.exec_command, paramiko.Channel.invoke_subsystem
    monkeypatch.setattr(
        paramiko.Channel, "exec_command", lambda ch, cmd: (opened.append("exec"), exec_command(ch, cmd))[1]
    )
    monkeypatch.setattr(
        paramiko.Channel, "invoke_subsystem", lambda ch, name: (opened.append(name), invoke_subsystem(ch, name))[1]
    )
    return opened


def test_a_log_read_starts_no_command_on_the_login_node(fresh_ssh: SSHClient, folder: str, sessions: list[str]) -> None:
    # A log tail reads every few seconds per open job page: each read was a `sh`, `tail` and
    # `head` forked on the login node. Now one SFTP session per connection serves them all.
    path = f"{folder}/job.out"
    fresh_ssh.files.write(path, b"epoch 1\n")
    sessions.clear()
    offset = 0
    for line in (b"epoch 2\n", b"", b"epoch 3\n"):
        if line:
            assert (
                fresh_ssh.run(["/bin/sh", "-c", 'printf %s "$2" >> "$1"', "sh", path, line.decode()]).exit_status == 0
            )
        data, offset = fresh_ssh.files.read(path, offset)
    assert offset == 24 and data == b"epoch 3\n"
    assert sessions == ["exec", "sftp", "exec"]  # the two appends, and one SFTP session for the three reads


def test_it_reads_nothing_past_the_end_and_names_what_it_cannot_read(fresh_ssh: SSHClient, folder: str) -> None:
    files = fresh_ssh.files
    files.write(f"{folder}/log.txt", b"0123456789")
    assert files.read(f"{folder}/log.txt", 50, 10) == (b"", 50)
    assert files.read(f"{folder}/log.txt", 4, 0) == (b"", 4)
    assert files.read(f"{folder}/log.txt", 9, 1 << 30) == (b"9", 10)
    assert fresh_ssh.run(["chmod", "000", "--", f"{folder}/log.txt"]).exit_status == 0
    with pytest.raises(RemoteFileMissing):
        files.read(f"{folder}/log.txt")  # there, but not readable by this account (as `test -r`)
    with pytest.raises(RemoteFileMissing):
        files.read(f"{folder}/log.txt/below")
    with pytest.raises(RemoteCommandFailed) as caught:
        files.read(folder)
    assert caught.value.message == f"Could not read {folder} on {fresh_ssh.host} as scientist: it is a folder"
    # None of these broke the session: the next read goes on over it.
    files.write(f"{folder}/more.txt", b"more")
    assert files.read(f"{folder}/more.txt", 1) == (b"ore", 4)


def test_a_large_read_asks_for_its_pieces_at_once_and_reads_exactly_its_range(
    fresh_ssh: SSHClient, folder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SFTP reads 32 KiB a request: a large read asks for all of them before waiting (one round
    # trip instead of one per piece), and still returns exactly the bytes from the offset on.
    prefetched: list[int | None] = []
    prefetch = paramiko.SFTPFile.prefetch
    monkeypatch.setattr(
        paramiko.SFTPFile, "prefetch", lambda f, size=None, *a: (prefetched.append(size), prefetch(f, size, *a))[1]
    )
    content = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit
    path = f"{folder}/big.out"
    fresh_ssh.files.write(path, content)
    assert fresh_ssh.files.read(path, 1001, 300_000) == (content[1001:301_001], 301_001)
    assert prefetched == [301_001]
    assert fresh_ssh.files.read(path, len(content) - 10, 1 << 20) == (content[-10:], len(content))
    assert fresh_ssh.files.read(path, 7, 1 << 30) == (content[7:], len(content))
    assert prefetched == [301_001, len(content)], "a small read asks once; a large one prefetches"


def test_a_dead_session_or_connection_is_replaced_once(fresh_ssh: SSHClient, folder: str, sessions: list[str]) -> None:
    path = f"{folder}/job.out"
    fresh_ssh.files.write(path, b"0123456789")
    assert fresh_ssh.files.read(path, 2, 3) == (b"234", 5)
    fresh_ssh.sftp().get_channel().close()  # the SFTP session alone ends
    assert fresh_ssh.files.read(path, 5, 3) == (b"567", 8)
    transport = fresh_ssh._client.get_transport()
    transport.sock.close()  # the whole connection dies under the next read
    assert fresh_ssh.files.read(path, 8) == (b"89", 10)
    assert fresh_ssh._client.get_transport() is not transport
    assert sessions.count("sftp") == 3


def test_a_login_host_without_sftp_gets_the_command(
    fresh_ssh: SSHClient, folder: str, sessions: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # sshd answers "no such subsystem" as it does when an administrator removed the sftp line.
    monkeypatch.setattr(fresh_ssh, "sftp_subsystem", "axle-no-such-subsystem")
    path = f"{folder}/job.out"
    fresh_ssh.files.write(path, b"0123456789")
    assert fresh_ssh.files.read(path, 7) == (b"789", 10)
    assert fresh_ssh.files.read(path, 10) == (b"", 10)
    with pytest.raises(RemoteFileMissing):
        fresh_ssh.files.read(f"{folder}/nothing")
    # Asked once per connection; then each read is a command, as before.
    assert sessions.count("axle-no-such-subsystem") == 1
    assert sessions.count("exec") == 4


def test_an_idle_connection_wakes_its_reader_rarely_and_still_answers_at_once(
    fresh_ssh: SSHClient, folder: str
) -> None:
    # A portal process keeps a connection or two per account: paramiko's reader thread woke
    # every 0.1 s on each (~10 % of a core for 200 accounts in bench/portal_load.py).
    fresh_ssh.files.write(f"{folder}/log.txt", b"x")
    sock = fresh_ssh._client.get_transport().sock
    assert sock.gettimeout() == IDLE_WAKE_SECONDS >= 5
    started = time.monotonic()
    assert fresh_ssh.files.read(f"{folder}/log.txt") == (b"x", 1)
    assert fresh_ssh.run(["true"]).exit_status == 0
    assert time.monotonic() - started < 2, "answers wake the reader, not its timeout"
