"""The cluster connections a process keeps (apps.clusters.transport): one pool per process,
each connection used by one thread at a time. No cluster: the connections are stand-ins."""

import threading

import pytest

from apps.clusters import transport
from apps.clusters.models import Cluster, ClusterGrant


class FakeClient:
    made = 0

    def __init__(self):
        FakeClient.made += 1
        self.closed = False

    connect_timeout = 10

    def close(self):
        self.closed = True

    def connect(self):
        pass


@pytest.fixture
def grant(monkeypatch):
    FakeClient.made = 0
    monkeypatch.setattr(transport, "_ssh", lambda grant: FakeClient())
    cluster = Cluster(pk=7, name="hpc", transport=Cluster.Transport.SSH, login_host="login", host_key="k")
    return ClusterGrant(pk=11, cluster=cluster, cluster_username="alice", ssh_private_key_encrypted="x")


def in_thread(fn):
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def use(grant):
    with transport.slurm_client(grant) as client:
        return client


def test_threads_of_a_process_reuse_one_connection_per_account(grant):
    # A portal process serves requests on several threads: the log tail of one job page lands
    # on any of them, and each must not log in to the cluster again.
    first = in_thread(lambda: use(grant))
    second = in_thread(lambda: use(grant))
    third = use(grant)
    assert first is second is third
    assert FakeClient.made == 1
    assert not first.closed


def test_a_connection_is_never_handed_to_two_threads_at_once(grant):
    inside, release = threading.Event(), threading.Event()
    held = []

    def hold():
        with transport.slurm_client(grant) as client:
            held.append(client)
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    assert inside.wait(5)
    other = use(grant)  # while the first thread still holds its connection
    release.set()
    thread.join()
    assert other is not held[0]
    assert FakeClient.made == 2
    # Both go back to the pool (at most IDLE_PER_ACCOUNT are kept) and are reused from there.
    assert {id(use(grant)) for _ in range(3)} <= {id(other), id(held[0])}
    assert FakeClient.made == 2


def test_a_burst_keeps_only_a_few_idle_connections(grant, monkeypatch):
    monkeypatch.setattr(transport, "IDLE_PER_ACCOUNT", 1)
    with transport.slurm_client(grant) as a, transport.slurm_client(grant) as b:
        assert a is not b
    assert b.closed != a.closed  # one kept, the other closed on return
    assert use(grant) is (a if not a.closed else b)


def test_a_failed_call_drops_its_connection(grant):
    with pytest.raises(RuntimeError), transport.slurm_client(grant) as broken:
        raise RuntimeError("connection lost")
    assert broken.closed
    assert use(grant) is not broken


def test_idle_connections_are_closed_after_a_while(grant, monkeypatch):
    old = use(grant)
    now = transport.time.monotonic()
    monkeypatch.setattr(transport.time, "monotonic", lambda: now + transport.IDLE_SECONDS + 1)
    fresh = use(grant)
    assert old.closed
    assert fresh is not old


def test_another_account_gets_its_own_connection_and_close_all_closes_them(grant):
    other = ClusterGrant(pk=12, cluster=grant.cluster, cluster_username="bob", ssh_private_key_encrypted="y")
    a, b = use(grant), use(other)
    assert a is not b
    transport.close_all()
    assert a.closed and b.closed
    assert use(grant) is not a


def test_idle_connections_are_closed_without_another_call(grant, monkeypatch):
    # A process that stops talking to the cluster (a portal whose pages were closed) does not
    # keep its sessions open until its next call: the reaper closes them.
    monkeypatch.setattr(transport, "IDLE_SECONDS", 0.05)
    monkeypatch.setattr(transport, "REAP_SECONDS", 0.05)
    transport._reaper = None  # one an earlier test started sleeps the default's 15 s
    client = use(grant)
    assert not client.closed
    for _ in range(100):
        if client.closed:
            break
        threading.Event().wait(0.02)
    assert client.closed
    assert transport._pool == {}
    for _ in range(100):  # and the reaper ends with the pool empty
        if transport._reaper is None:
            break
        threading.Event().wait(0.02)
    assert transport._reaper is None


def test_ready_drops_stale_connections_and_keeps_the_one_it_made(grant, monkeypatch):
    monkeypatch.setattr(transport, "IDLE_PER_ACCOUNT", 2)
    with transport.slurm_client(grant) as a, transport.slurm_client(grant) as b:
        stale = [a, b]  # both back in the pool: it is full
    now = transport.time.monotonic()
    monkeypatch.setattr(transport.time, "monotonic", lambda: now + transport.IDLE_SECONDS + 1)
    assert transport.ready(grant, wait=1.0)
    assert FakeClient.made == 3
    made = use(grant)
    assert FakeClient.made == 3, "the connection ready() made was closed, not kept"
    assert made not in stale and not made.closed
    assert all(old.closed for old in stale)
    assert use(grant) is made  # the connection ready() made is the one the next call gets


class Staging(FakeClient):
    """A connection that can hold a submission sent ahead (as SSHClient)."""

    def __init__(self):
        super().__init__()
        self.unstaged = 0
        self.expired = 0

    def stage_one(self, req):
        return True

    def unstage(self):
        self.unstaged += 1

    def expire_staged(self):
        self.expired += 1


def test_unstage_closes_the_program_on_its_own_connection_only_and_keeps_the_connection(grant, monkeypatch):
    monkeypatch.setattr(transport, "_ssh", lambda grant: Staging())
    with transport.slurm_client(grant) as mine, transport.slurm_client(grant) as other:
        pass  # two idle connections; `mine` given back last (the outer block ends last)
    assert transport.stage_one(grant, object()) is mine
    with transport.slurm_client(grant) as busy:  # another thread's call takes `mine` meanwhile
        assert busy is mine
        transport.unstage(grant, mine)  # not idle: left to its own next use
        assert mine.unstaged == 0
    transport.unstage(grant, mine)
    assert (mine.unstaged, other.unstaged) == (1, 0)
    assert not mine.closed
    with transport.slurm_client(grant) as again:
        assert again is mine  # back in the pool, as the last one given back
    transport.unstage(grant, Staging())  # a connection the pool never had: nothing
    assert mine.expired >= 3, "each return to the pool looks for a program past its time"


def test_a_connection_that_sends_nothing_ahead_is_not_named(grant, monkeypatch):
    class Refusing(Staging):
        def stage_one(self, req):
            return False

    monkeypatch.setattr(transport, "_ssh", lambda grant: Refusing())
    use(grant)
    assert transport.stage_one(grant, object()) is None
