"""What the hub would write to Slurm for a grant (pure: no cluster)."""

import pytest

from apps.clusters import enforcement
from apps.integrations.slurm import associations as a
from tests.factories import ClusterGrantFactory, UserFactory

pytestmark = pytest.mark.django_db

FRESH = [
    a.Association("local", "vision", "approver", "", {"MaxWall": "", "MaxTRES": "", "MaxJobs": "", "MaxSubmit": ""})
]


@pytest.fixture
def grant(alice):
    return ClusterGrantFactory(
        user=alice,
        cluster_username="approver",
        allowed_partitions=["debug"],
        max_cpus=1,
        max_mem_mb=2048,
        max_time_minutes=10,
        max_active_jobs=3,
        max_array_size=None,
    )


def test_a_fresh_account_gets_the_partition_and_every_other_partition_closed(grant):
    commands, drift = enforcement.plan(user="approver", grant=grant, assocs=FRESH)
    assert [" ".join(c[2:4]) for c in commands] == ["modify user", "add user", "modify user"]
    assert commands[0][-4:] == ["MaxWall=-1", "MaxTRES=cpu=-1,mem=-1,node=-1", "MaxJobs=-1", "MaxSubmitJobs=0"]
    assert commands[2][-4:] == ["MaxWall=10", "MaxTRES=cpu=1,mem=2048,node=-1", "MaxJobs=3", "MaxSubmitJobs=3"]
    assert "vision/debug: no association" in drift


def test_an_account_in_sync_needs_nothing(grant):
    shown = a.parse_assocs("local|vision|approver|debug|00:10:00|cpu=1,mem=2G|3|3\nlocal|vision|approver|||||0\n")
    assert enforcement.plan(user="approver", grant=grant, assocs=shown) == ([], [])


def test_an_ended_grant_closes_every_association_and_deletes_none():
    shown = a.parse_assocs("local|vision|approver|debug|00:10:00|cpu=1,mem=2G|3|3\nlocal|vision|approver|||||0\n")
    commands, drift = enforcement.plan(user="approver", grant=None, assocs=shown)
    assert [c[-1] for c in commands] == ["MaxSubmitJobs=0"] and "delete" not in str(commands)
    assert drift == [
        "vision/debug: MaxWall is 00:10:00, not unlimited",
        "vision/debug: MaxTRES is cpu=1,mem=2G, not unlimited",
        "vision/debug: MaxJobs is 3, not unlimited",
        "vision/debug: MaxSubmit is 3, not 0",
    ]


def test_an_array_counts_as_many_jobs_as_it_may_have_tasks(grant):
    grant.max_array_size = 10
    assert enforcement.limits_for(grant).max_submit == 30


def test_a_user_known_on_no_cluster_is_reported_not_guessed(grant):
    commands, drift = enforcement.plan(user="approver", grant=grant, assocs=[])
    assert commands == [] and "on 0 Slurm clusters" in drift[0]


def test_grant_changes_and_the_clock_queue_a_sync_of_clusters_with_an_operator_only(monkeypatch, alice, root):
    from apps.clusters import services
    from apps.core import crypto
    from tests.factories import ClusterFactory

    queued = []
    monkeypatch.setattr(enforcement, "enqueue", lambda path, *args: queued.append((path, args)))
    enforced, plain = ClusterFactory(name="enforced"), ClusterFactory(name="plain")
    operator = ClusterGrantFactory(cluster=enforced, user=root, cluster_username="slurmops", status="active")
    operator.ssh_private_key_encrypted = crypto.encrypt("key")
    operator.save()
    enforcement.cluster_set_operator(cluster=enforced, grant=operator, actor=root)
    queued.clear()

    for cluster in (enforced, plain):
        grant = services.grant_create(user=alice, cluster=cluster, cluster_username="alice_hpc", actor=root)
        services.grant_update_limits(grant=grant, actor=root, max_cpus=2)
        services.grant_revoke(grant=grant, actor=root)
    sync = ("apps.clusters.enforcement.cluster_enforce_grants", (enforced.pk,))
    assert queued == [sync] * 3
    queued.clear()
    assert enforcement.enforce_all() == 1 and queued == [sync]


def test_only_an_active_grant_of_the_cluster_with_a_key_can_be_its_operator(alice):
    from apps.core.errors import ValidationFailed
    from tests.factories import ClusterFactory

    cluster = ClusterFactory()
    keyless = ClusterGrantFactory(cluster=cluster, user=alice, cluster_username="ops", status="active")
    with pytest.raises(ValidationFailed, match="SSH key"):
        enforcement.cluster_set_operator(cluster=cluster, grant=keyless, actor=None)


def test_an_expired_or_revoked_grant_is_followed_as_no_grant_and_two_active_ones_are_reported(alice, bob, root):
    from datetime import timedelta

    from django.utils import timezone

    from tests.factories import ClusterFactory

    cluster = ClusterFactory()
    cluster.operator_grant = ClusterGrantFactory(cluster=cluster, user=root, cluster_username="ops", status="active")
    expired = ClusterGrantFactory(
        cluster=cluster,
        user=alice,
        cluster_username="alice_hpc",
        status="active",
        valid_until=timezone.now() - timedelta(1),
    )
    ClusterGrantFactory(cluster=cluster, user=alice, cluster_username="shared", status="revoked")
    ClusterGrantFactory(cluster=cluster, user=bob, cluster_username="shared", status="active")
    ClusterGrantFactory(cluster=cluster, user=UserFactory(), cluster_username="shared", status="active")
    chosen, problems = enforcement._grants_by_user(cluster)
    assert chosen == {"alice_hpc": None} and expired.is_usable is False
    assert problems == ["shared is the cluster account of 2 active grants; Slurm cannot hold both."]
