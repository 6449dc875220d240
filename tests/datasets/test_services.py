"""Datasets without a cluster: who may create and see what, numbering, immutability, and the
helpers the jobs app relies on."""

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from apps.audit.models import AuditEvent
from apps.clusters.models import ClusterGrant
from apps.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from apps.datasets import selectors, services
from apps.datasets.models import Dataset, DatasetVersion
from apps.datasets.remote import Measurement
from tests.factories import ClusterFactory, ClusterGrantFactory, MembershipFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db

V = DatasetVersion.Status


@pytest.fixture
def cluster(alice, bob):
    cluster = ClusterFactory(name="hpc1")
    ClusterGrantFactory(user=alice, cluster=cluster)
    ClusterGrantFactory(user=bob, cluster=cluster)
    return cluster


@pytest.fixture
def dataset(alice, team):
    return services.dataset_create(user=alice, team=team, name="cifar10", description="Small images")


def ready(version: DatasetVersion, checksum="a" * 64) -> DatasetVersion:
    DatasetVersion.objects.filter(pk=version.pk).update(status=V.READY, checksum=checksum, size_bytes=10, file_count=2)
    version.refresh_from_db()
    return version


def test_a_member_creates_a_dataset_and_it_is_audited(dataset, alice, team):
    assert (dataset.team, dataset.name, dataset.created_by) == (team, "cifar10", alice)
    event = AuditEvent.objects.get(action="dataset.created")
    assert event.actor == alice and event.after["name"] == "cifar10"


def test_it_refuses_a_dataset_in_a_team_the_user_is_not_in(charlie, team):
    with pytest.raises(PermissionDenied, match="not a member of team vision"):
        services.dataset_create(user=charlie, team=team, name="x")


@pytest.mark.parametrize("name", ["", "has space", "semi;colon", "ünï", "x" * 65])
def test_it_refuses_names_that_are_not_slugs(alice, team, name):
    with pytest.raises(ValidationFailed):
        services.dataset_create(user=alice, team=team, name=name)


def test_names_are_unique_per_team_but_not_across_teams(dataset, alice, bob, team):
    with pytest.raises(Conflict, match="already has a dataset named cifar10"):
        services.dataset_create(user=bob, team=team, name="cifar10")
    other = TeamFactory(name="audio")
    MembershipFactory(user=alice, team=other)
    assert services.dataset_create(user=alice, team=other, name="cifar10").team == other


def test_charlie_sees_none_of_visions_datasets(dataset, charlie, bob):
    assert list(selectors.dataset_list(user=bob)) == [dataset]
    assert list(selectors.dataset_list(user=charlie)) == []
    with pytest.raises(NotFound):
        selectors.dataset_get(user=charlie, id=dataset.uuid)


def test_registering_a_path_makes_a_pending_version_and_queues_its_checksum(
    dataset, alice, cluster, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        version = services.dataset_version_register(
            user=alice, dataset=dataset, cluster=cluster, path="/scratch/alice/data/cifar10/"
        )
    assert (version.number, version.status, version.path) == (1, V.PENDING, "/scratch/alice/data/cifar10")
    assert version.cluster_username == "alice"
    assert len(callbacks) == 1  # the checksum task, sent once the row is committed
    assert AuditEvent.objects.get(action="dataset_version.registered").after["path"] == "/scratch/alice/data/cifar10"


def test_versions_are_numbered_one_two_three_per_dataset(dataset, alice, bob, team, cluster):
    numbers = [
        services.dataset_version_register(user=u, dataset=dataset, cluster=cluster, path=f"/d/{i}").number
        for i, u in enumerate([alice, bob, alice])
    ]
    other = services.dataset_create(user=alice, team=team, name="other")
    assert numbers == [1, 2, 3]
    assert services.dataset_version_register(user=alice, dataset=other, uri="s3://b/k").number == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_concurrent_registrations_get_distinct_numbers(alice, team):
    dataset = services.dataset_create(user=alice, team=team, name="raced")
    barrier, results, errors = threading.Barrier(8), [], []

    def register(i):
        try:
            barrier.wait()
            results.append(services.dataset_version_register(user=alice, dataset=dataset, uri=f"s3://b/{i}").number)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=register, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == list(range(1, 9))


def test_it_refuses_a_path_without_a_grant_on_that_cluster(dataset, alice):
    elsewhere = ClusterFactory(name="hpc2")
    with pytest.raises(PermissionDenied, match="no active grant on cluster hpc2"):
        services.dataset_version_register(user=alice, dataset=dataset, cluster=elsewhere, path="/d")


def test_it_refuses_registrations_from_outside_the_team(dataset, charlie):
    with pytest.raises(PermissionDenied):
        services.dataset_version_register(user=charlie, dataset=dataset, uri="s3://b/k")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"path": "relative/dir"}, "must be absolute"),
        ({"path": "/a/../etc"}, "without “..”"),
        ({"path": "/a\nb"}, "characters"),
        ({"path": None, "uri": None}, "either a path"),
        ({"path": "/d", "uri": "s3://b/k"}, "either a path"),
        ({"path": None, "uri": "file:///etc/passwd"}, "file:// are not accepted"),
        ({"path": None, "uri": "not a uri"}, "scheme://"),
    ],
)
def test_it_refuses_bad_locations(dataset, alice, cluster, kwargs, message):
    kwargs = {"cluster": cluster, **kwargs}
    if kwargs.get("uri") and not kwargs.get("path"):
        kwargs["cluster"] = None
    with pytest.raises(ValidationFailed, match=message):
        services.dataset_version_register(user=alice, dataset=dataset, **kwargs)


def test_a_uri_version_is_ready_at_once_without_a_checksum(dataset, alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        version = services.dataset_version_register(user=alice, dataset=dataset, uri="s3://bucket/cifar10/")
    assert (version.status, version.checksum, version.cluster) == (V.READY, "", None)
    assert callbacks == []
    verification = services.dataset_version_verify(version=version, user=alice)
    assert verification and verification.skipped


def test_a_ready_version_refuses_changes(dataset, alice, cluster):
    version = ready(services.dataset_version_register(user=alice, dataset=dataset, cluster=cluster, path="/d"))
    version.full_clean()  # unchanged: fine
    version.path = "/elsewhere"
    with pytest.raises(ValidationError, match="is ready and cannot change"):
        version.full_clean()
    version.refresh_from_db()
    version.checksum = "b" * 64
    with pytest.raises(ValidationError, match="checksum"):
        version.full_clean()
    version.refresh_from_db()
    version.status = V.FAILED
    with pytest.raises(ValidationError):
        version.full_clean()


def test_a_pending_version_cannot_be_verified(dataset, alice, cluster):
    version = services.dataset_version_register(user=alice, dataset=dataset, cluster=cluster, path="/d")
    with pytest.raises(Exception, match="only a ready version"):
        services.dataset_version_verify(version=version, user=alice)


def test_running_the_checksum_task_twice_does_nothing_the_second_time(dataset, alice, cluster, monkeypatch):
    version = services.dataset_version_register(user=alice, dataset=dataset, cluster=cluster, path="/d")
    calls = []

    def fake(grant, path, *, on_listing, on_progress):
        calls.append(path)
        on_listing(2, 10)
        on_progress(2, 10)
        return Measurement(
            size_bytes=10, file_count=2, checksum="c" * 64, lines=[b"0" * 64 + b"  a", b"1" * 64 + b"  b"]
        )

    monkeypatch.setattr("apps.datasets.remote.measure", fake)
    services.dataset_version_checksum(version_id=version.pk)
    services.dataset_version_checksum(version_id=version.pk)
    version.refresh_from_db()
    assert calls == ["/d"]
    assert (version.status, version.checksum, version.files_done, version.bytes_total) == (V.READY, "c" * 64, 2, 10)
    assert version.manifest == "0" * 64 + "  a\n" + "1" * 64 + "  b\n" and version.manifest_complete


def test_a_huge_manifest_is_kept_only_in_part(monkeypatch):
    monkeypatch.setattr(DatasetVersion, "MANIFEST_MAX_LINES", 3)
    text, complete = services._manifest_text([b"x"] * 5)
    assert (text, complete) == ("x\nx\nx\n", False)


def test_a_version_whose_owner_lost_the_grant_fails_clearly(dataset, alice, cluster):
    version = services.dataset_version_register(user=alice, dataset=dataset, cluster=cluster, path="/d")
    ClusterGrant.objects.filter(user=alice).update(status=ClusterGrant.Status.REVOKED)
    services.dataset_version_checksum(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == V.FAILED and "no longer holds an active grant on hpc1" in version.error


# ---------------------------------------------------------------- what the jobs app uses


def test_env_names_are_upper_case_with_underscores(team, alice):
    assert selectors.env_name(Dataset(name="cifar-10.v2")) == "AXLE_DATASET_CIFAR_10_V2"
    assert selectors.env_name(Dataset(name="imagenet_1k")) == "AXLE_DATASET_IMAGENET_1K"


def test_versions_for_a_job_are_the_ready_ones_on_its_cluster(dataset, alice, bob, charlie, team, cluster):
    a = ready(services.dataset_version_register(user=alice, dataset=dataset, cluster=cluster, path="/d/a"))
    other = services.dataset_create(user=alice, team=team, name="labels")
    u = services.dataset_version_register(user=alice, dataset=other, uri="s3://b/labels")
    assert selectors.dataset_versions_for_job(bob, [str(u.uuid), a.uuid], cluster=cluster) == [u, a]
    assert selectors.dataset_env([a, u]) == {"AXLE_DATASET_CIFAR10": "/d/a", "AXLE_DATASET_LABELS": "s3://b/labels"}

    with pytest.raises(NotFound, match="does not exist or is not one of your teams"):
        selectors.dataset_versions_for_job(charlie, [a.uuid], cluster=cluster)
    with pytest.raises(ValidationFailed, match="is on cluster hpc1, not on hpc9"):
        selectors.dataset_versions_for_job(alice, [a.uuid], cluster=ClusterFactory(name="hpc9"))
    pending = services.dataset_version_register(user=alice, dataset=dataset, cluster=cluster, path="/d/b")
    with pytest.raises(ValidationFailed) as exc:
        selectors.dataset_versions_for_job(alice, [pending.uuid, "nonsense"], cluster=cluster)
    assert exc.value.extra["problems"][0] == "cifar10@2 is pending, not ready; wait for its checksum."
    assert len(exc.value.extra["problems"]) == 2
    with pytest.raises(ValidationFailed, match="would both be AXLE_DATASET_CIFAR10"):
        selectors.dataset_versions_for_job(alice, [a.uuid, ready(pending).uuid], cluster=cluster)


def test_a_version_of_another_team_is_not_found(dataset, alice, cluster):
    version = services.dataset_version_register(user=alice, dataset=dataset, uri="s3://b/k")
    stranger = UserFactory(username="stranger")
    MembershipFactory(user=stranger, team=TeamFactory(name="audio"))
    assert selectors.dataset_version_get(user=alice, id=version.uuid) == version
    with pytest.raises(NotFound):
        selectors.dataset_version_get(user=stranger, id=version.uuid)
    with pytest.raises(NotFound):
        selectors.dataset_version_get(user=alice, id="not-a-uuid")


def test_the_rescue_requeues_lost_pending_versions_and_fails_dead_checksums(
    dataset, alice, cluster, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    lost = services.dataset_version_register(user=alice, dataset=dataset, cluster=cluster, path="/lost")
    dead = services.dataset_version_register(user=alice, dataset=dataset, cluster=cluster, path="/dead")
    slow = services.dataset_version_register(user=alice, dataset=dataset, cluster=cluster, path="/slow")
    fresh = services.dataset_version_register(user=alice, dataset=dataset, cluster=cluster, path="/fresh")
    long_ago = timezone.now() - timedelta(minutes=20)
    DatasetVersion.objects.filter(pk=lost.pk).update(updated_at=long_ago)
    DatasetVersion.objects.filter(pk=dead.pk).update(status=V.CHECKSUMMING, updated_at=long_ago, bytes_total=10)
    # 100 GB still to hash: its current call may legitimately run for much longer than 20 minutes.
    DatasetVersion.objects.filter(pk=slow.pk).update(status=V.CHECKSUMMING, updated_at=long_ago, bytes_total=100 << 30)
    with django_capture_on_commit_callbacks() as callbacks:
        assert services.dataset_versions_rescue() == {"resent": 1, "failed": 1}
    assert len(callbacks) == 1
    statuses = dict(DatasetVersion.objects.values_list("path", "status"))
    assert statuses == {"/lost": V.PENDING, "/dead": V.FAILED, "/slow": V.CHECKSUMMING, "/fresh": V.PENDING}
    assert "stopped" in DatasetVersion.objects.get(pk=dead.pk).error
    assert fresh.status == V.PENDING
