"""The datasets API as a script would use it, with a token-authenticated client."""

import pytest

from apps.datasets import services
from apps.datasets.models import DatasetVersion
from tests.factories import ClusterFactory, ClusterGrantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def as_alice(api, alice):
    api.force_authenticate(alice)
    return api


@pytest.fixture
def cluster(alice):
    cluster = ClusterFactory(name="hpc1")
    ClusterGrantFactory(user=alice, cluster=cluster, cluster_username="alice01")
    return cluster


@pytest.fixture
def dataset(alice, team):
    return services.dataset_create(user=alice, team=team, name="cifar10", description="Small images")


def test_alice_creates_a_dataset_in_her_team(as_alice):
    response = as_alice.post("/api/v1/datasets/", {"team": "vision", "name": "mnist", "description": "digits"})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["team"] == "vision" and body["name"] == "mnist" and body["env_name"] == "AXLE_DATASET_MNIST"
    assert body["version_count"] == 0 and body["latest_version"] is None
    listed = as_alice.get("/api/v1/datasets/").json()
    assert [d["name"] for d in listed["results"]] == ["mnist"]


def test_a_bad_or_taken_name_is_a_400_with_the_reason(as_alice, dataset):
    response = as_alice.post("/api/v1/datasets/", {"team": "vision", "name": "cifar10"})
    assert response.status_code == 409 and "already has a dataset named cifar10" in response.json()["detail"]
    assert as_alice.post("/api/v1/datasets/", {"team": "vision", "name": "a b"}).status_code == 400


def test_charlie_can_neither_see_nor_add_to_visions_datasets(api, charlie, dataset, cluster):
    api.force_authenticate(charlie)
    assert api.get("/api/v1/datasets/").json()["results"] == []
    assert api.get(f"/api/v1/datasets/{dataset.uuid}/").status_code == 404
    assert api.get(f"/api/v1/datasets/{dataset.uuid}/versions/").status_code == 404
    assert api.post(f"/api/v1/datasets/{dataset.uuid}/versions/", {"uri": "s3://b/k"}).status_code == 404
    assert api.get(f"/api/v1/datasets/{dataset.uuid}/versions/1/").status_code == 404
    assert api.post("/api/v1/datasets/", {"team": "vision", "name": "sneaky"}).status_code == 404


def test_registering_a_path_answers_201_with_a_pending_version_and_its_progress(as_alice, dataset, cluster):
    response = as_alice.post(
        f"/api/v1/datasets/{dataset.uuid}/versions/", {"cluster": "hpc1", "path": "/scratch/alice01/cifar10"}
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["number"] == 1 and body["status"] == "pending" and body["cluster"] == "hpc1"
    assert body["path"] == "/scratch/alice01/cifar10" and body["cluster_username"] == "alice01"
    assert body["progress"] == {
        "files_done": 0,
        "files_total": None,
        "bytes_done": 0,
        "bytes_total": None,
        "percent": 0,
    }
    # by cluster id too
    response = as_alice.post(
        f"/api/v1/datasets/{dataset.uuid}/versions/", {"cluster": str(cluster.uuid), "path": "/scratch/alice01/cifar10"}
    )
    assert response.json()["number"] == 2


def test_polling_a_version_by_number_shows_progress_then_the_result(as_alice, dataset, cluster):
    version = services.dataset_version_register(user=dataset.created_by, dataset=dataset, cluster=cluster, path="/d")
    DatasetVersion.objects.filter(pk=version.pk).update(
        status="checksumming", files_done=5, files_total=20, bytes_done=250, bytes_total=1000
    )
    body = as_alice.get(f"/api/v1/datasets/{dataset.uuid}/versions/1/").json()
    assert body["status"] == "checksumming" and body["progress"]["percent"] == 25
    DatasetVersion.objects.filter(pk=version.pk).update(
        status="ready", checksum="f" * 64, size_bytes=1000, file_count=20, manifest="…", manifest_complete=True
    )
    body = as_alice.get(f"/api/v1/datasets/{dataset.uuid}/versions/1/").json()
    assert (body["status"], body["checksum"], body["file_count"], body["size_bytes"]) == ("ready", "f" * 64, 20, 1000)
    assert body["manifest_complete"] is True
    assert as_alice.get(f"/api/v1/datasets/{dataset.uuid}/versions/2/").status_code == 404


def test_a_uri_version_needs_no_cluster(as_alice, dataset):
    response = as_alice.post(f"/api/v1/datasets/{dataset.uuid}/versions/", {"uri": "s3://bucket/cifar10/"})
    assert response.status_code == 201 and response.json()["status"] == "ready"
    assert response.json()["cluster"] is None


def test_a_path_on_a_cluster_without_a_grant_is_refused_with_the_reason(as_alice, dataset):
    ClusterFactory(name="hpc2")
    response = as_alice.post(f"/api/v1/datasets/{dataset.uuid}/versions/", {"cluster": "hpc2", "path": "/d"})
    assert response.status_code == 403 and "no active grant on cluster hpc2" in response.json()["detail"]
    response = as_alice.post(f"/api/v1/datasets/{dataset.uuid}/versions/", {"path": "/d"})
    assert response.status_code == 400 and "which cluster" in response.json()["detail"]


def test_the_version_list_is_newest_first_without_n_plus_one(as_alice, dataset, cluster, django_assert_num_queries):
    for i in range(5):
        services.dataset_version_register(user=dataset.created_by, dataset=dataset, cluster=cluster, path=f"/d/{i}")
    # auth is forced; dataset lookup, count, page
    with django_assert_num_queries(3):
        body = as_alice.get(f"/api/v1/datasets/{dataset.uuid}/versions/").json()
    assert [v["number"] for v in body["results"]] == [5, 4, 3, 2, 1]


def test_versions_cannot_be_edited_or_deleted_through_the_api(as_alice, dataset):
    services.dataset_version_register(user=dataset.created_by, dataset=dataset, uri="s3://b/k")
    url = f"/api/v1/datasets/{dataset.uuid}/versions/1/"
    assert as_alice.put(url, {"uri": "s3://b/other"}).status_code == 405
    assert as_alice.patch(url, {"uri": "s3://b/other"}).status_code == 405
    assert as_alice.delete(url).status_code == 405


def test_the_schema_describes_the_datasets_api(as_alice):
    response = as_alice.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {
        "/api/v1/datasets/",
        "/api/v1/datasets/{dataset_id}/versions/",
        "/api/v1/datasets/{dataset_id}/versions/{number}/",
    } <= set(paths)
