"""`ClusterFiles` over SSH: the login host's coreutils, run as the grant's cluster user
through the same pinned-host-key connection as the Slurm commands.

Every path travels as a positional argument of a fixed `/bin/sh` script (not the user's
login shell, whose syntax a csh user could change), never as part of the script text.
GNU coreutils and find are assumed, as on every Linux cluster. Reads (the log tail: most of
the calls) go over an SFTP session kept open on the same connection instead, where the login
host offers one (OpenSSH does unless an administrator turned it off)."""

from __future__ import annotations

import builtins
import errno
import re
import stat as stat_mode
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import paramiko

from .base import FileEntry, FileStat, RemoteCommandFailed, RemoteFileMissing, TransportError, bounded

if TYPE_CHECKING:
    from .ssh import CommandResult, SSHClient

MAX_READ = 8 << 20
HASH_TIMEOUT = 600.0
# The exit status our scripts use for "not there, or not readable by this account".
MISSING = 44

# tail seeks to the offset and head stops after `limit` bytes, so only the new part of a
# growing log crosses the wire.
READ_SCRIPT = f'test -r "$1" || exit {MISSING}; tail -c +"$2" -- "$1" | head -c "$3"'
# mktemp in the target's own folder makes the rename atomic (same file system); the trap
# removes the temporary file when anything before the rename fails.
WRITE_SCRIPT = """set -e
dir=$(dirname -- "$1")
mkdir -p -- "$dir"
tmp=$(mktemp -- "$dir/.axle-write.XXXXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
chmod -- "$2" "$tmp"
mv -fT -- "$tmp" "$1"
trap - EXIT
"""
STAT_SCRIPT = f'test -e "$1" || exit {MISSING}; exec stat -L -c "%F/%s/%Y" -- "$1"'
HASH_SCRIPT = f'test -f "$1" && test -r "$1" || exit {MISSING}; exec sha256sum -- "$1"'
LIST_SCRIPT = f'test -d "$1" && cd -- "$1" && test -r . || exit {MISSING}; exec find . -type f -printf \'%s %P\\0\''
# The NUL-separated relative names on stdin, hashed in that order from inside the folder.
HASH_MANY_SCRIPT = f'cd -- "$1" || exit {MISSING}; exec xargs -0 -r sha256sum --'

SHA256 = re.compile(rb"^\\?([0-9a-f]{64}) ")


class SSHFiles:
    """`ClusterFiles` on one `SSHClient`; closing it closes that connection."""

    def __init__(self, ssh: SSHClient) -> None:
        self.ssh = ssh

    def __repr__(self) -> str:
        return f"SSHFiles({self.ssh!r})"

    def close(self) -> None:
        self.ssh.close()

    def run(self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float | None = None) -> CommandResult:
        from .ssh import _ConnectionLost

        # Every file operation here is safe to repeat (a write lands by rename or not at all), so a
        # kept connection that died under one is replaced and the operation tried once more. A
        # command that outlived its time limit is not: it may still be running, and a second one
        # would wait as long again.
        for _ in range(2):
            try:
                return self.ssh.run(argv, stdin=stdin, timeout=timeout)
            except _ConnectionLost as exc:
                lost = exc
                if exc.timed_out:
                    break
        raise TransportError(f"Lost the connection to {self.ssh.host}: {lost}", permanent=False) from None

    def _sh(self, script: str, *args: str, stdin: bytes | None = None, timeout: float | None = None) -> CommandResult:
        return self.run(["/bin/sh", "-c", script, "sh", *args], stdin=stdin, timeout=timeout)

    def _failed(self, result: CommandResult, what: str) -> RemoteCommandFailed:
        detail = "; ".join(result.err.splitlines()[:3]) or f"exit status {result.exit_status}"
        return RemoteCommandFailed(f"Could not {what} on {self.ssh.host} as {self.ssh.username}: {detail}", detail)

    def read(self, path: str, offset: int = 0, limit: int = 1 << 20) -> tuple[bytes, int]:
        """Over the connection's SFTP session: open, fstat, one read from `offset` of what is
        there, close; no shell and no process on the login node (a log tail is most of the
        reads: each was a `sh`, `tail` and `head`, ~4.8 ms of the login node's CPU). A login
        host without SFTP gets the command."""
        from .ssh import _NoSFTP

        limit = max(0, min(limit, MAX_READ))
        # As `run`: a session that died under the read is replaced and the read tried once more
        # (reading twice changes nothing); one that outlived its time limit is not.
        for _ in range(2):
            try:
                sftp = self.ssh.sftp()
            except _NoSFTP:
                return self._read_with_command(path, offset, limit)
            try:
                return self._read_sftp(sftp, path, offset, limit)
            except _SessionLost as exc:
                lost = exc
                if exc.timed_out:
                    break
        raise TransportError(f"Lost the connection to {self.ssh.host}: {lost}", permanent=False) from None

    def _read_sftp(self, sftp: paramiko.SFTPClient, path: str, offset: int, limit: int) -> tuple[bytes, int]:
        timeout = bounded(self.ssh.command_timeout)
        sftp.get_channel().settimeout(timeout)
        handle = None
        try:
            handle = sftp.open(path, "rb")
            attrs = handle.stat()
            if stat_mode.S_ISDIR(attrs.st_mode or 0):
                _close_quietly(handle)
                raise RemoteCommandFailed(
                    f"Could not read {path} on {self.ssh.host} as {self.ssh.username}: it is a folder", "Is a directory"
                )
            # What is there now, at most `limit` bytes; a file cut shorter since the fstat
            # gives what is left (an offset past the end reads nothing, as `tail` did).
            want = min(limit, (attrs.st_size or 0) - offset)
            data = b""
            if want > 0:
                handle.seek(offset)
                if want > handle.MAX_REQUEST_SIZE:
                    # SFTP reads 32 KiB a request, and paramiko waits for each answer before
                    # asking the next: ask them all at once (a whole 256 KiB log chunk was 8
                    # round trips, a 1 MiB file-store read 32).
                    handle.prefetch(offset + want)
                data = handle.read(want)
            handle.close()
            return data, offset + len(data)
        except TimeoutError:
            self.ssh.drop_sftp()
            raise _SessionLost(f"no answer within {timeout:.0f}s", timed_out=True) from None
        except OSError as exc:
            if not self.ssh.sftp_open(sftp):
                self.ssh.close()
                raise _SessionLost(str(exc) or type(exc).__name__) from None
            # The session's server answered: the file's own status.
            if handle is not None:
                _close_quietly(handle)
            if exc.errno in (errno.ENOENT, errno.EACCES):
                raise RemoteFileMissing(f"{path} does not exist (yet) or cannot be read.") from None
            detail = exc.strerror or str(exc) or type(exc).__name__
            raise RemoteCommandFailed(
                f"Could not read {path} on {self.ssh.host} as {self.ssh.username}: {detail}", detail
            ) from None
        except (paramiko.SSHException, paramiko.SFTPError, EOFError) as exc:
            self.ssh.close()
            raise _SessionLost(str(exc) or type(exc).__name__) from None

    def _read_with_command(self, path: str, offset: int, limit: int) -> tuple[bytes, int]:
        result = self._sh(READ_SCRIPT, path, str(offset + 1), str(limit))
        if result.exit_status == MISSING:
            raise RemoteFileMissing(f"{path} does not exist (yet) or cannot be read.")
        if result.exit_status != 0:
            raise self._failed(result, f"read {path}")
        return result.stdout, offset + len(result.stdout)

    def write(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        result = self._sh(WRITE_SCRIPT, path, f"{mode & 0o7777:o}", stdin=data)
        if result.exit_status != 0:
            raise self._failed(result, f"write {path}")

    def mkdir(self, path: str) -> None:
        result = self.run(["mkdir", "-p", "--", path])
        if result.exit_status != 0:
            raise self._failed(result, f"create the folder {path}")

    def stat(self, path: str) -> FileStat:
        result = self._sh(STAT_SCRIPT, path)
        if result.exit_status == MISSING:
            raise RemoteFileMissing(f"{path} does not exist.")
        if result.exit_status != 0:
            raise self._failed(result, f"look at {path}")
        kind, size, mtime = result.out.strip().rsplit("/", 2)
        return FileStat(
            kind="dir" if kind == "directory" else "file" if kind.startswith("regular") else "other",
            size=int(size),
            mtime=datetime.fromtimestamp(int(mtime), UTC),
        )

    def sha256(self, path: str, *, timeout: float | None = None) -> str:
        result = self._sh(HASH_SCRIPT, path, timeout=timeout or HASH_TIMEOUT)
        if result.exit_status == MISSING:
            raise RemoteFileMissing(f"{path} does not exist or is not a file this account can read.")
        match = SHA256.match(result.stdout) if result.exit_status == 0 else None
        if match is None:
            raise self._failed(result, f"checksum {path}")
        return match.group(1).decode()

    def sha256_many(self, folder: str, names: Sequence[str], *, timeout: float | None = None) -> builtins.list[bytes]:
        if not names:
            return []
        stdin = b"".join(name.encode("utf-8", "surrogateescape") + b"\0" for name in names)
        result = self._sh(HASH_MANY_SCRIPT, folder, stdin=stdin, timeout=timeout or HASH_TIMEOUT)
        if result.exit_status == MISSING:
            raise RemoteFileMissing(f"{folder} is not a folder this account can read.")
        if result.exit_status != 0:
            raise self._failed(result, f"checksum the files in {folder}")
        try:
            return sha256sum_lines(result.stdout, len(names))
        except ValueError as exc:
            raise RemoteCommandFailed(
                f"Unexpected answer from sha256sum in {folder} on {self.ssh.host}: {exc}"
            ) from None

    def list(self, path: str) -> builtins.list[FileEntry]:
        result = self._sh(LIST_SCRIPT, path, timeout=max(self.ssh.command_timeout, 300.0))
        if result.exit_status == MISSING:
            raise RemoteFileMissing(f"{path} is not a folder (yet).")
        if result.exit_status != 0:
            # find goes on past an unreadable subfolder, says so on stderr and exits 1.
            raise self._failed(result, f"list {path}")
        entries = []
        for record in result.stdout.split(b"\0"):
            size, sep, name = record.partition(b" ")
            if sep and size.isdigit() and name:
                entries.append(FileEntry(name.decode("utf-8", "surrogateescape"), int(size)))
        return sorted(entries, key=lambda e: e.name.encode("utf-8", "surrogateescape"))


class _SessionLost(Exception):
    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def _close_quietly(handle: paramiko.SFTPFile) -> None:
    try:
        handle.close()
    except Exception:  # noqa: BLE001 - the read's own error is the one to report
        pass


def sha256sum_lines(out: bytes, expected: int) -> list[bytes]:
    """sha256sum's lines for `expected` files, kept byte for byte.

    A name with a newline or backslash gets an escaped line starting with a backslash, so the
    output still has exactly one line per file."""
    lines = out.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if len(lines) != expected:
        raise ValueError(f"sha256sum printed {len(lines)} lines for {expected} files")
    for line in lines:
        if not SHA256.match(line) or line.removeprefix(b"\\")[64:66] != b"  ":
            raise ValueError(f"unexpected sha256sum line: {line[:100]!r}")
    return lines
