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
    commands, drift = enforcement.plan(user="approver", grant=grant, assocs=FRESH, default_account="vision")
    assert [" ".join(c[2:4]) for c in commands] == ["modify user", "add user", "modify user"]
    assert commands[0][-4:] == ["MaxWall=-1", "MaxTRES=cpu=-1,mem=-1,node=-1", "MaxJobs=-1", "MaxSubmitJobs=0"]
    assert commands[2][-4:] == ["MaxWall=10", "MaxTRES=cpu=1,mem=2048,node=-1", "MaxJobs=3", "MaxSubmitJobs=3"]
    assert "vision/debug: no association" in drift


def test_an_account_in_sync_needs_nothing(grant):
    shown = a.parse_assocs("local|vision|approver|debug|00:10:00|cpu=1,mem=2G|3|3\nlocal|vision|approver|||||0\n")
    assert enforcement.plan(user="approver", grant=grant, assocs=shown, default_account="vision") == ([], [])


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


TWO_ACCOUNTS = a.parse_assocs("local|vision|approver|||||\nlocal|research|approver|||||\n")


def test_blank_accounts_and_partitions_open_only_the_defaults_as_the_hub_check_does(grant):
    grant.allowed_partitions, grant.allowed_accounts = [], []
    commands, _ = enforcement.plan(
        user="approver", grant=grant, assocs=TWO_ACCOUNTS, default_account="vision", default_partition="debug"
    )

    def where(c):
        return [w for w in c if w.startswith(("account=", "partition="))] + [c[-1]]

    assert [(c[2], *where(c)) for c in commands] == [
        ("modify", "account=research", "partition=", "MaxSubmitJobs=0"),
        ("modify", "account=vision", "partition=", "MaxSubmitJobs=0"),
        ("add", "account=vision", "partition=debug", "partition=debug"),
        ("modify", "account=vision", "partition=debug", "MaxSubmitJobs=3"),
    ]


def test_blank_partitions_with_the_default_unknown_close_everything(grant):
    grant.allowed_partitions = []
    commands, drift = enforcement.plan(user="approver", grant=grant, assocs=FRESH, default_account="vision")
    assert [c[-1] for c in commands] == ["MaxSubmitJobs=0"]
    assert "default partition is not known yet" in drift[0]


def test_usernames_the_hub_wrote_for_stay_managed_after_their_grant_is_gone(alice):
    from apps.clusters.models import Cluster

    grant = ClusterGrantFactory(user=alice, cluster_username="alice_new")
    cluster = grant.cluster
    Cluster.objects.filter(pk=cluster.pk).update(enforcement={"users": {"alice_old": {}}, "managed": ["bob_deleted"]})
    cluster.refresh_from_db()
    chosen, problems = enforcement._grants_by_user(cluster)
    assert chosen == {"alice_new": grant, "alice_old": None, "bob_deleted": None} and problems == []


def test_clusters_out_of_service_are_still_enforced(monkeypatch, root):
    from apps.core import crypto
    from tests.factories import ClusterFactory

    queued = []
    monkeypatch.setattr(enforcement, "enqueue", lambda path, *args: queued.append(args))
    cluster = ClusterFactory(name="retired")
    operator = ClusterGrantFactory(cluster=cluster, user=root, cluster_username="slurmops")
    operator.ssh_private_key_encrypted = crypto.encrypt("key")
    operator.save()
    enforcement.cluster_set_operator(cluster=cluster, grant=operator, actor=root)
    cluster.is_active = False
    cluster.save()
    queued.clear()
    assert enforcement.enforce_all() == 1 and queued == [(cluster.pk,)]
