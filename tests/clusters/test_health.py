"""The health task against the real local cluster (compose/local), through both transports."""

import pytest

from apps.audit.models import AuditEvent
from apps.clusters import services
from apps.clusters.models import Cluster
from apps.clusters.tasks import cluster_refresh_all, cluster_refresh_health
from tests.factories import ClusterFactory, ClusterGrantFactory
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant

pytestmark = pytest.mark.django_db

WRONG_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture
def local_env():
    env = local_cluster_env()
    if env is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    return env


@pytest.mark.slurm
@pytest.mark.parametrize("transport", ["ssh", "rest"])
def test_a_reachable_cluster_reports_its_partitions_and_nodes(local_env, alice, transport):
    cluster = make_local_cluster(transport, f"local-{transport}")
    make_local_grant(cluster, alice)

    cluster = cluster_refresh_health(cluster.pk)

    assert cluster.reachable is True, cluster.last_error
    assert cluster.last_error == "" and cluster.checked_at is not None
    partitions = {p["name"]: p for p in cluster.state["partitions"]}
    assert "debug" in partitions
    assert partitions["debug"]["state"] == "UP"
    assert any(n["cpus"] > 0 and n["memory_mb"] > 0 for n in cluster.state["nodes"])
    assert AuditEvent.objects.filter(action="cluster.became_reachable", subject_id=str(cluster.uuid)).count() == 1

    cluster_refresh_health(cluster.pk)  # a second check that finds the same is not an event
    assert AuditEvent.objects.filter(action__startswith="cluster.became_").count() == 1


@pytest.mark.slurm
def test_a_changed_host_key_makes_the_cluster_unreachable_with_that_reason(local_env, alice, root):
    cluster = make_local_cluster("ssh", "local-ssh")
    make_local_grant(cluster, alice)
    assert cluster_refresh_health(cluster.pk).reachable is True
    # As if the login node had been reinstalled, or someone were in the middle.
    from apps.integrations.slurm.ssh import PinnedHostKey

    wrong = min(PinnedHostKey.parse(WRONG_HOST_KEY).fingerprints)
    services.cluster_set_host_key(cluster=cluster, host_key=WRONG_HOST_KEY, confirmed_fingerprint=wrong, actor=root)

    cluster = cluster_refresh_health(cluster.pk)

    assert cluster.reachable is False
    assert "Host key refused" in cluster.last_error and "not the pinned key" in cluster.last_error
    assert cluster.state["partitions"], "the last known state stays for the page"
    assert AuditEvent.objects.filter(action="cluster.became_unreachable").count() == 1


@pytest.mark.slurm
def test_a_rest_cluster_whose_login_node_key_changed_still_answers_over_rest(local_env, alice):
    # slurmrestd is reached over HTTP; the pinned SSH key only guards reading logs.
    cluster = make_local_cluster("rest", "local-rest")
    make_local_grant(cluster, alice)
    assert cluster_refresh_health(cluster.pk).reachable is True


def test_a_cluster_without_a_usable_grant_says_so(alice):
    cluster = ClusterFactory()
    ClusterGrantFactory(user=alice, cluster=cluster)  # active, but holds no key

    cluster = cluster_refresh_health(cluster.pk)

    assert cluster.reachable is None
    assert "No active grant with credentials" in cluster.last_error and "SSH key" in cluster.last_error
    assert not AuditEvent.objects.filter(action__startswith="cluster.became_").exists()


def test_a_dead_login_node_is_unreachable(alice, root):
    cluster = ClusterFactory(login_host="127.0.0.1", login_port=9)  # discard port: nothing listens
    services.grant_generate_ssh_key(grant=ClusterGrantFactory(user=alice, cluster=cluster), actor=root)
    from apps.integrations.slurm.ssh import PinnedHostKey

    services.cluster_set_host_key(
        cluster=cluster,
        host_key=WRONG_HOST_KEY,
        confirmed_fingerprint=min(PinnedHostKey.parse(WRONG_HOST_KEY).fingerprints),
        actor=root,
    )
    cluster = cluster_refresh_health(cluster.pk)
    assert cluster.reachable is False and cluster.last_error
    assert AuditEvent.objects.filter(action="cluster.became_unreachable").count() == 1


def test_an_unpinned_cluster_is_never_contacted(alice, root):
    cluster = ClusterFactory()
    services.grant_generate_ssh_key(grant=ClusterGrantFactory(user=alice, cluster=cluster), actor=root)
    cluster = cluster_refresh_health(cluster.pk)
    assert cluster.reachable is False
    assert "no confirmed host key" in cluster.last_error


def test_refresh_all_queues_one_check_per_active_cluster(monkeypatch, django_capture_on_commit_callbacks):
    queued = []
    monkeypatch.setattr("apps.clusters.tasks.enqueue", lambda path, *args: queued.append((path, args)))
    active = ClusterFactory()
    ClusterFactory(is_active=False)
    assert cluster_refresh_all() == 1
    assert queued == [("apps.clusters.tasks.cluster_refresh_health", (active.pk,))]


def test_setup_schedules_registers_the_health_check_once(db):
    from django.core.management import call_command
    from django_q.models import Schedule

    call_command("setup_schedules")
    call_command("setup_schedules")
    schedule = Schedule.objects.get(name="clusters.refresh_health")
    assert schedule.func == "apps.clusters.tasks.cluster_refresh_all"
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 1 and schedule.repeats == -1
    assert Schedule.objects.filter(name="clusters.refresh_health").count() == 1


def test_an_inactive_cluster_is_not_checked():
    cluster = ClusterFactory(is_active=False)
    assert cluster_refresh_health(cluster.pk) is None
    assert Cluster.objects.get(pk=cluster.pk).checked_at is None
