"""`SlurmClient` over SSH: Slurm's own commands on the cluster's login host, run as the
grant's cluster user, through one pinned-host-key connection reused for many calls.

    with SSHClient(host, port, username, private_key, host_key=fingerprint) as slurm:
        job_id = slurm.submit(request)
        jobs = slurm.queue(username)
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import shlex
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Self

import paramiko

from . import config, parsing
from .base import (
    AmbiguousSubmitError,
    ClusterFiles,
    ClusterState,
    HostKeyError,
    JobInfo,
    SlurmError,
    SlurmRejected,
    SubmitRequest,
    TransportError,
)
from .sshfiles import SSHFiles

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_COMMAND_TIMEOUT = 60.0


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's 'SHA256:...' fingerprint of a public key (as `ssh-keygen -lf` prints)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class PinnedHostKey:
    """What the admin confirmed: known_hosts lines and/or SHA256 fingerprints."""

    fingerprints: frozenset[str]

    @classmethod
    def parse(cls, pinned: str | Sequence[str]) -> PinnedHostKey:
        """Accepts 'SHA256:...' fingerprints, known_hosts lines ('host type base64'),
        or public key lines ('type base64 [comment]'), one per item or line."""
        items = [pinned] if isinstance(pinned, str) else list(pinned)
        prints: set[str] = set()
        for item in items:
            for line in item.splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("SHA256:"):
                    prints.add(line.split()[0])
                    continue
                prints.add(_fingerprint_of_key_line(line))
        if not prints:
            raise HostKeyError("No pinned host key was configured for this cluster.")
        return cls(frozenset(prints))


def _fingerprint_of_key_line(line: str) -> str:
    words = line.split()
    if words and words[0].startswith("@"):  # @cert-authority / @revoked markers
        raise HostKeyError(f"Unsupported known_hosts marker {words[0]}.")
    for i, word in enumerate(words[:-1]):
        if word.startswith(("ssh-", "ecdsa-", "sk-")):
            blob = base64.b64decode(words[i + 1])
            digest = hashlib.sha256(blob).digest()
            return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
    raise HostKeyError(f"Cannot read a host key from {line[:40]!r}.")


class _PinnedPolicy(paramiko.MissingHostKeyPolicy):
    """Accept exactly the pinned key. The client's own known-hosts store is left empty
    so that every key goes through this check; nothing is ever added or saved."""

    def __init__(self, pinned: PinnedHostKey) -> None:
        self.pinned = pinned

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        presented = fingerprint(key)
        if presented not in self.pinned.fingerprints:
            raise HostKeyError(
                f"The host key of {hostname} is {key.get_name()} {presented}, which is not the "
                "pinned key. It may have been reinstalled or someone may be intercepting the "
                "connection; an administrator must confirm the new key."
            )


def load_private_key(key: str | paramiko.PKey, passphrase: str | None = None) -> paramiko.PKey:
    if isinstance(key, paramiko.PKey):
        return key
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(key), password=passphrase)
        except (paramiko.SSHException, ValueError):
            continue
    # never echo the key material itself
    raise TransportError("The cluster private key cannot be read.", permanent=True)


@dataclass
class CommandResult:
    exit_status: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace").strip()


class _ConnectionLost(Exception):
    """The channel died after the command had been sent."""


class SSHClient:
    """One SSH connection to a cluster's login host, as one cluster user.

    Not thread-safe: a worker opens one per cluster and poll cycle, uses it for all of
    that cycle's calls, and closes it (`with SSHClient(...) as c:`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        private_key: str | paramiko.PKey,
        host_key: str | Sequence[str],
        *,
        passphrase: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._key = load_private_key(private_key, passphrase)
        self._pinned = PinnedHostKey.parse(host_key)
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._client: paramiko.SSHClient | None = None
        self._files = SSHFiles(self)

    def __repr__(self) -> str:  # the key must never show up in logs or tracebacks
        return f"SSHClient({self.username}@{self.host}:{self.port})"

    # ---------------------------------------------------------------- connection

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        if self._client is not None and self._alive():
            return
        self.close()
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_PinnedPolicy(self._pinned))
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.username,
                pkey=self._key,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                channel_timeout=self.connect_timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(f"The host key of {self.host} changed: {exc}") from None
        except paramiko.AuthenticationException:
            client.close()
            raise TransportError(
                f"The cluster refused the key of user {self.username} on {self.host}.",
                permanent=True,
            ) from None
        except (TimeoutError, OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            raise TransportError(
                f"Cannot connect to {self.host}:{self.port}: {exc or type(exc).__name__}",
                permanent=False,
            ) from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(30)
            # Each command is a few small packets; with Nagle's algorithm on they wait for
            # the server's delayed ACK, about 40 ms per command (measured in bench/).
            sock = getattr(transport, "sock", None)
            if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = client

    def _alive(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ---------------------------------------------------------------- commands

    def run(
        self,
        args: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run one command; every word is quoted, so nothing in it is shell syntax.

        Raises TransportError if the command could not be started (nothing ran) and
        _ConnectionLost if the connection died after it was sent (it may have run)."""
        words = [*(f"{k}={v}" for k, v in (env or {}).items())]
        command = " ".join(shlex.quote(w) for w in (["env", *words] if words else []) + list(args))
        return self._exec(command, stdin=stdin, timeout=timeout)

    def _exec(self, command: str, *, stdin: bytes | None, timeout: float | None) -> CommandResult:
        self.connect()
        assert self._client is not None
        transport = self._client.get_transport()
        try:
            assert transport is not None
            channel = transport.open_session(timeout=self.connect_timeout)
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError, AssertionError) as exc:
            self.close()
            raise TransportError(f"Cannot start a command on {self.host}: {exc}", permanent=False) from None
        try:
            if stdin is not None:
                channel.sendall(stdin)
            channel.shutdown_write()
            return self._collect(channel, timeout or self.command_timeout)
        except (paramiko.SSHException, OSError, EOFError, _ConnectionLost) as exc:
            self.close()
            raise _ConnectionLost(str(exc) or type(exc).__name__) from None
        finally:
            channel.close()

    def _collect(self, channel: paramiko.Channel, timeout: float) -> CommandResult:
        # Drain both streams together: a command filling stderr's window while we block
        # on stdout would hang both ends. Done means exit status and end of output.
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        while True:
            progressed = False
            while channel.recv_ready():
                out += channel.recv(65536)
                progressed = True
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
                progressed = True
            if channel.exit_status_ready() and (channel.eof_received or channel.closed):
                if not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                continue
            if not self._alive():
                raise _ConnectionLost("the connection closed before the command finished")
            if time.monotonic() > deadline:
                raise _ConnectionLost(f"no answer within {timeout:.0f}s")
            if not progressed:
                time.sleep(0.005)
        return CommandResult(channel.recv_exit_status(), bytes(out), bytes(err))

    def _query(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> CommandResult:
        """A read-only command: a lost connection is just a transient transport error."""
        try:
            return self.run(args, env=env)
        except _ConnectionLost as exc:
            raise TransportError(f"Lost the connection to {self.host}: {exc}", permanent=False) from None

    # ---------------------------------------------------------------- SlurmClient

    @property
    def files(self) -> ClusterFiles:
        """The cluster's files as this user, over this same connection."""
        return self._files

    def submit(self, req: SubmitRequest) -> str:
        args = ["sbatch", "--parsable"]
        if req.job_name:
            args.append(f"--job-name={req.job_name}")
        if req.comment:
            args.append(f"--comment={req.comment}")
        if req.workdir:
            args.append(f"--chdir={req.workdir}")
        args.extend(req.extra_args)
        # The job inherits sbatch's environment (--export=ALL unless the script says
        # otherwise), so parameters ride on `env`, which takes any value, commas included.
        try:
            result = self.run(args, stdin=req.script.encode(), env=req.env)
        except _ConnectionLost as exc:
            raise AmbiguousSubmitError(
                f"The connection to {self.host} broke while sbatch was running ({exc}); "
                "the job may or may not have been submitted."
            ) from None
        if result.exit_status != 0:
            raise SlurmRejected(result.err or f"sbatch exited with status {result.exit_status}")
        job_id = parsing.parse_sbatch_parsable(result.out)
        if job_id is None:
            raise AmbiguousSubmitError(f"sbatch succeeded but printed no job id: {result.out!r}")
        return job_id

    def queue(self, user: str) -> list[JobInfo]:
        result = self._query(parsing.squeue_args(user), env=parsing.TIME_ENV)
        self._check(result, "squeue")
        return parsing.parse_squeue(result.out)

    def accounting(self, job_ids: list[str]) -> list[JobInfo]:
        if not job_ids:
            return []
        result = self._query(parsing.sacct_args(job_ids), env=parsing.TIME_ENV)
        self._check(result, "sacct")
        return parsing.parse_sacct(result.out)

    def find_by_comment(self, marker: str) -> list[JobInfo]:
        return self.find_by_comments([marker]).get(marker, [])

    def find_by_comments(self, markers: Sequence[str]) -> dict[str, list[JobInfo]]:
        # squeue keeps finished jobs for MinJobAge (300 s by default), which covers a
        # worker restarting; accounting only has comments with
        # AccountingStoreFlags=job_comment, so it is the fallback, not the source. One
        # squeue (and at most one sacct) however many markers are looked for.
        wanted = set(markers)
        found: dict[str, list[JobInfo]] = {}
        if not wanted:
            return found
        result = self._query(parsing.squeue_args(None, all_states=True), env=parsing.TIME_ENV)
        self._check(result, "squeue")
        for job in parsing.parse_squeue(result.out):
            if job.comment in wanted:
                found.setdefault(job.comment, []).append(job)
        missing = wanted - set(found)
        if missing:
            result = self._query(
                [*parsing.sacct_args(since="now-7days"), f"--user={self.username}"],
                env=parsing.TIME_ENV,
            )
            self._check(result, "sacct")
            for job in parsing.parse_sacct(result.out):
                if job.comment in missing:
                    found.setdefault(job.comment, []).append(job)
        return found

    def cancel(self, job_id: str) -> None:
        result = self._query(["scancel", job_id])
        if result.exit_status != 0 or result.err:
            raise SlurmRejected(result.err or f"scancel exited with status {result.exit_status}")

    def cluster_state(self) -> ClusterState:
        result = self._query(parsing.sinfo_args())
        self._check(result, "sinfo")
        state = parsing.parse_sinfo(result.out)
        # The defaults Slurm gives a job that does not say: one scontrol for the
        # partitions, one for the cluster-wide values they inherit.
        partitions = self._query(config.PARTITIONS_ARGS)
        self._check(partitions, "scontrol show partition")
        settings = self._query(config.CONFIG_ARGS)
        self._check(settings, "scontrol show config")
        return config.apply_partition_config(state, partitions.out, config.parse_config(settings.out))

    def ping(self) -> None:
        result = self._query(["scontrol", "ping"])
        if result.exit_status != 0 or "UP" not in result.out:
            raise TransportError(
                f"The Slurm controller does not answer: {(result.out + result.err).strip()}",
                permanent=False,
            )

    def _check(self, result: CommandResult, what: str) -> None:
        if result.exit_status != 0:
            # squeue/sacct failing usually means slurmctld/slurmdbd is down: transient.
            raise SlurmError(
                f"{what} failed (exit {result.exit_status}): {result.err}",
                permanent=False,
            )
