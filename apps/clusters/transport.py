"""Build the Slurm client for a grant: the one place secrets are decrypted for use.

Callers use it as a context manager and never inside a database transaction."""

import base64
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from apps.core import crypto
from apps.integrations.slurm.base import (
    ClusterFiles,
    HostKeyError,
    NoClusterFiles,
    SlurmClient,
    SlurmError,
    SubmitRequest,
    TransportError,
)
from apps.integrations.slurm.rest import RestClient
from apps.integrations.slurm.ssh import SSHClient

from .models import Cluster, ClusterGrant

log = logging.getLogger(__name__)


def _ssh(grant: ClusterGrant) -> SSHClient:
    cluster = grant.cluster
    if not cluster.login_host:
        raise TransportError(f"Cluster {cluster.name} has no login host configured.", permanent=True)
    if not cluster.host_key.strip():
        raise HostKeyError(
            f"Cluster {cluster.name} has no confirmed host key; an administrator must confirm it before Axle connects."
        )
    if not grant.ssh_private_key_encrypted:
        raise TransportError(
            f"The grant for {grant.cluster_username} on {cluster.name} has no SSH key yet; an administrator adds one.",
            permanent=True,
        )
    try:
        key = crypto.decrypt(grant.ssh_private_key_encrypted)
    except crypto.SecretUnreadable as exc:
        raise TransportError(str(exc), permanent=True) from None
    return SSHClient(
        cluster.login_host,
        cluster.login_port,
        grant.cluster_username,
        key,
        cluster.host_key.strip().splitlines(),
        slurm_bin_dir=cluster.slurm_bin_dir,
    )


def _rest(grant: ClusterGrant) -> RestClient:
    cluster = grant.cluster
    if not cluster.rest_url:
        raise TransportError(f"Cluster {cluster.name} has no slurmrestd URL configured.", permanent=True)
    token = jwt_key = None
    try:
        if grant.rest_token_encrypted:
            token = crypto.decrypt(grant.rest_token_encrypted)
        elif cluster.jwt_key_encrypted:
            # Stored base64-encoded: signing keys are raw bytes.
            jwt_key = base64.b64decode(crypto.decrypt(cluster.jwt_key_encrypted))
    except crypto.SecretUnreadable as exc:
        raise TransportError(str(exc), permanent=True) from None
    if token is None and jwt_key is None:
        raise TransportError(
            f"Neither the grant for {grant.cluster_username} nor cluster {cluster.name} has a slurmrestd credential.",
            permanent=True,
        )
    return RestClient(
        cluster.rest_url,
        grant.cluster_username,
        token=token,
        jwt_key=jwt_key,
        api_version=cluster.rest_api_version,
        files=_rest_files(grant),
    )


def _rest_files(grant: ClusterGrant) -> ClusterFiles:
    """slurmrestd has no file API: files (logs, checksums, tracking stores) are reached over
    the login node when the grant also holds an SSH key."""
    cluster = grant.cluster
    if grant.ssh_private_key_encrypted and cluster.login_host and cluster.host_key.strip():
        return _ssh(grant).files
    return NoClusterFiles(f"A REST-only grant ({grant.cluster_username} on cluster {cluster.name})")


# Connections are kept per process and reused while idle for less than this long: an SSH
# handshake costs more than most Slurm calls (tens of ms of CPU on each side), and a tracking
# cycle, a burst of submissions or the job pages' log tails talk to the same account again
# and again. A connection is used by one thread at a time: a thread takes it out of the pool
# for its call and puts it back afterwards, so threads share connections without sharing one
# at once. (Kept per thread before: a portal process of 4 threads held up to 4 connections
# per account, and the log tails of 200 open job pages made ~2,400 SSH logins.)
IDLE_SECONDS = 60
#: Idle connections kept per account and process; more at once (a burst) are closed on return.
IDLE_PER_ACCOUNT = 2
_lock = threading.Lock()
_pool: dict[str, list[tuple[SlurmClient, float]]] = {}


#: How often a process that keeps idle connections looks for those idle too long, without
#: waiting for its next cluster call (a portal process whose pages stopped asking the cluster
#: closes its sessions within IDLE_SECONDS + REAP_SECONDS).
REAP_SECONDS = 15.0
_reaper: threading.Thread | None = None


def _forget_after_fork() -> None:
    # A forked child must not use (nor close) its parent's connections: they are the parent's.
    global _lock, _reaper
    _lock = threading.Lock()
    _pool.clear()
    _reaper = None  # threads do not survive a fork


os.register_at_fork(after_in_child=_forget_after_fork)


def _key(grant: ClusterGrant) -> str:
    c = grant.cluster
    # Everything that decides where and as whom we connect: change any, get a new connection.
    parts = [
        c.pk,
        c.transport,
        c.login_host,
        c.login_port,
        c.host_key,
        c.slurm_bin_dir,
        c.rest_url,
        c.rest_api_version,
        c.jwt_key_encrypted,
        grant.pk,
        grant.cluster_username,
        grant.ssh_private_key_encrypted,
        grant.rest_token_encrypted,
    ]
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _drop_stale(now: float) -> list[SlurmClient]:
    """Take every connection idle for longer than IDLE_SECONDS out of the pool (the caller
    holds the lock, and closes them after releasing it)."""
    stale = []
    for k, idle in list(_pool.items()):
        fresh = [(cl, t) for cl, t in idle if now - t <= IDLE_SECONDS]
        stale += [cl for cl, t in idle if now - t > IDLE_SECONDS]
        if fresh:
            _pool[k] = fresh
        else:
            del _pool[k]
    return stale


def _reap() -> None:
    """The reaper's loop: every REAP_SECONDS, close the connections idle too long; ends once
    the pool is empty (the next connection given back starts another)."""
    global _reaper
    while True:
        time.sleep(REAP_SECONDS)
        with _lock:
            stale = _drop_stale(time.monotonic())
            done = not _pool
            if done and _reaper is threading.current_thread():
                _reaper = None
        for old in stale:
            old.close()
        if done:
            return


def _take(key: str, now: float) -> SlurmClient | None:
    """The most recently used idle connection for `key` (None if none), after dropping every
    connection idle for too long; those are closed outside the lock."""
    with _lock:
        stale = _drop_stale(now)
        idle = _pool.get(key)
        client = idle.pop()[0] if idle else None
        if idle == []:
            del _pool[key]
    for old in stale:
        old.close()
    return client


def _give_back(key: str, client: SlurmClient) -> None:
    global _reaper
    expire = getattr(client, "expire_staged", None)
    if expire is not None:
        expire()  # a submission sent ahead that nobody took in time: closed, not kept waiting
    with _lock:
        idle = _pool.setdefault(key, [])
        keep = len(idle) < IDLE_PER_ACCOUNT
        if keep:
            idle.append((client, time.monotonic()))
            if _reaper is None or not _reaper.is_alive():
                _reaper = threading.Thread(target=_reap, name="axle-cluster-reaper", daemon=True)
                _reaper.start()
    if not keep:
        client.close()


def close_all() -> None:
    with _lock:
        clients = [client for idle in _pool.values() for client, _ in idle]
        _pool.clear()
    for client in clients:
        client.close()


@contextmanager
def slurm_client(grant: ClusterGrant) -> Iterator[SlurmClient]:
    """A client for the grant's account, reused from earlier calls in this process when it
    can be (never by two threads at once).

    A call that fails drops the connection, since its state is then unknown."""
    key = _key(grant)
    client = _take(key, time.monotonic())
    if client is None:
        client = _rest(grant) if grant.cluster.transport == Cluster.Transport.REST else _ssh(grant)
    try:
        yield client
    except BaseException:
        client.close()
        raise
    _give_back(key, client)


def ready(grant: ClusterGrant, *, wait: float) -> bool:
    """Whether this process can talk to the grant's account at once: an idle connection is in
    the pool, or a new one was made within about `wait` seconds (and put in the pool for the
    caller's `slurm_client`). Never waits longer: a cluster that is slow to answer makes this
    False, not a stalled caller. Talks to the cluster only when the pool has no connection, so
    a pooled one is not checked: this bounds making a connection, not the calls after it (a
    caller that must answer soon bounds those with `base.deadline`)."""
    key = _key(grant)
    now = time.monotonic()
    with _lock:
        # Stale entries would count against IDLE_PER_ACCOUNT when the new one is given back.
        stale = _drop_stale(now)
        pooled = bool(_pool.get(key))
    for old in stale:
        old.close()
    if pooled:
        return True
    try:
        client = _rest(grant) if grant.cluster.transport == Cluster.Transport.REST else _ssh(grant)
    except SlurmError:
        return False
    try:
        if isinstance(client, RestClient):
            client.timeout, timeout = wait, client.timeout
            try:
                client.ping()
            finally:
                client.timeout = timeout
            # Its files (a submission's folders) go over the login node's SSH, when it has one.
            ssh = getattr(client.files, "ssh", None)
            if ssh is not None:
                _connect_within(ssh, wait)
        else:
            _connect_within(client, wait)
    except SlurmError:
        client.close()
        return False
    _give_back(key, client)
    return True


def stage_one(grant: ClusterGrant, req: SubmitRequest) -> SlurmClient | None:
    """Send the submission of `req` alone ahead, on the grant's pooled connection (over SSH:
    `SSHClient.stage_one`, a program that waits for its go; nothing for slurmrestd). Called
    by a request that submits `req` right after its transaction (a sweep's first wave),
    before that transaction opens: its `slurm_client` then takes the same connection (the
    last one given back) and `submit_many([req])` sends only the go. Never connects and
    never raises: with no idle connection, nothing. The connection it was sent on (for
    `unstage`), or None when nothing was sent."""
    key = _key(grant)
    client = _take(key, time.monotonic())
    if client is None:
        return None
    try:
        stage = getattr(client, "stage_one", None)
        staged = bool(stage(req)) if stage is not None else False
    except Exception:  # noqa: BLE001 - best effort: the submission sends its own program
        log.exception("Sending a submission ahead to %s failed", grant.cluster.name)
        client.close()
        return None
    _give_back(key, client)
    return client if staged else None


def unstage(grant: ClusterGrant, client: SlurmClient) -> None:
    """Close what `stage_one` sent ahead on `client` when its caller will not submit it (its
    transaction failed): nothing is submitted, and no shell or sbatch is left waiting on the
    login node for a go that will not come. Only while `client` is idle in the pool: one
    another thread took meanwhile closes it at its next submission (another program) or when
    it comes back to the pool after SPARE_SECONDS (`_give_back`). Never raises."""
    key = _key(grant)
    with _lock:
        idle = _pool.get(key, [])
        at = next((i for i, (pooled, _) in enumerate(idle) if pooled is client), None)
        if at is not None:
            idle.pop(at)
            if not idle:
                del _pool[key]
    if at is None:
        return
    try:
        client.unstage()
    except Exception:  # noqa: BLE001 - best effort, as stage_one
        log.exception("Closing a submission sent ahead to %s failed", grant.cluster.name)
        client.close()
        return
    _give_back(key, client)


def _connect_within(client: SSHClient, wait: float) -> None:
    client.connect_timeout, timeout = wait, client.connect_timeout
    try:
        client.connect()
    finally:
        client.connect_timeout = timeout
