"""The datasets pages as a person uses them."""

import pytest

from apps.datasets import services
from apps.datasets.models import Dataset, DatasetVersion
from tests.factories import ClusterFactory, ClusterGrantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def cluster(alice):
    cluster = ClusterFactory(name="hpc1")
    ClusterGrantFactory(user=alice, cluster=cluster, cluster_username="alice01")
    ClusterFactory(name="hpc-no-grant")
    return cluster


@pytest.fixture
def dataset(alice, team):
    return services.dataset_create(user=alice, team=team, name="cifar10", description="Small images")


def test_the_list_shows_my_teams_datasets_and_creates_one(client, alice, dataset):
    client.force_login(alice)
    page = client.get("/datasets/").content.decode()
    assert "cifar10" in page and "New dataset" in page
    response = client.post("/datasets/", {"team": "vision", "name": "mnist", "description": "digits"})
    created = Dataset.objects.get(name="mnist")
    assert response.status_code == 302 and response["Location"] == f"/datasets/{created.uuid}/"


def test_a_refused_name_is_shown_inline(client, alice, dataset):
    client.force_login(alice)
    response = client.post("/datasets/", {"team": "vision", "name": "cifar10"})
    assert response.status_code == 400
    assert "already has a dataset named cifar10" in response.content.decode()


def test_charlie_gets_404_for_visions_dataset(client, charlie, dataset):
    client.force_login(charlie)
    assert "cifar10" not in client.get("/datasets/").content.decode()
    assert client.get(f"/datasets/{dataset.uuid}/").status_code == 404
    assert client.get(f"/datasets/{dataset.uuid}/versions/1/").status_code == 404


def test_the_cluster_picker_offers_only_clusters_i_hold_a_grant_on(client, alice, dataset, cluster):
    client.force_login(alice)
    page = client.get(f"/datasets/{dataset.uuid}/").content.decode()
    assert "hpc1 — as alice01" in page and "hpc-no-grant" not in page


def test_registering_a_folder_shows_it_checksumming_with_a_progress_bar(client, alice, dataset, cluster):
    client.force_login(alice)
    response = client.post(f"/datasets/{dataset.uuid}/", {"kind": "path", "cluster": "hpc1", "path": "/d/cifar"})
    assert response.status_code == 302
    version = DatasetVersion.objects.get(dataset=dataset)
    DatasetVersion.objects.filter(pk=version.pk).update(
        status="checksumming", files_done=1, files_total=4, bytes_done=50, bytes_total=200
    )
    page = client.get(f"/datasets/{dataset.uuid}/").content.decode()
    assert 'hx-trigger="every 2s"' in page and "<progress" in page and "25%" in page
    part = client.get(f"/datasets/{dataset.uuid}/?part=versions", HTTP_HX_REQUEST="true").content.decode()
    assert part.startswith('<div id="dataset-versions"') and "1 / 4 files" in part

    DatasetVersion.objects.filter(pk=version.pk).update(
        status="ready", checksum="e" * 64, file_count=4, size_bytes=200, manifest="x  a\n", manifest_complete=True
    )
    part = client.get(f"/datasets/{dataset.uuid}/?part=versions", HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in part and "eeeeeeeeeeee…" in part  # polling stops once all are done


def test_a_failed_version_shows_its_reason(client, alice, dataset, cluster):
    version = services.dataset_version_register(user=alice, dataset=dataset, cluster=cluster, path="/nope")
    DatasetVersion.objects.filter(pk=version.pk).update(
        status="failed", error="/nope does not exist on hpc1 or is not readable by alice01."
    )
    client.force_login(alice)
    page = client.get(f"/datasets/{dataset.uuid}/").content.decode()
    assert "/nope does not exist on hpc1 or is not readable by alice01." in page
    assert client.get(f"/datasets/{dataset.uuid}/versions/1/").status_code == 200


def test_a_refused_registration_is_shown_inline(client, alice, dataset, cluster):
    client.force_login(alice)
    response = client.post(f"/datasets/{dataset.uuid}/", {"kind": "path", "cluster": "hpc1", "path": "relative"})
    assert response.status_code == 400 and "must be absolute" in response.content.decode()
    response = client.post(f"/datasets/{dataset.uuid}/", {"kind": "path", "cluster": "hpc-no-grant", "path": "/d"})
    assert response.status_code == 400 and "Pick a cluster you hold an active grant on" in response.content.decode()


def test_a_uri_version_and_its_page(client, alice, dataset):
    client.force_login(alice)
    client.post(f"/datasets/{dataset.uuid}/", {"kind": "uri", "uri": "s3://bucket/cifar10/"})
    page = client.get(f"/datasets/{dataset.uuid}/versions/1/").content.decode()
    assert "s3://bucket/cifar10/" in page and "AXLE_DATASET_CIFAR10" in page and "not computed" in page


def test_the_list_page_does_not_grow_queries_with_datasets(client, alice, team, django_assert_max_num_queries):
    for i in range(10):
        d = services.dataset_create(user=alice, team=team, name=f"d{i}")
        services.dataset_version_register(user=alice, dataset=d, uri=f"s3://b/{i}")
    client.force_login(alice)
    with django_assert_max_num_queries(8):
        assert client.get("/datasets/").status_code == 200


def test_the_admin_lists_datasets_read_only(client, root, dataset):
    client.force_login(root)
    assert client.get("/admin/datasets/dataset/").status_code == 200
    assert client.get("/admin/datasets/datasetversion/").status_code == 200
    assert client.get("/admin/datasets/dataset/add/").status_code == 403
    assert client.get(f"/admin/datasets/dataset/{dataset.pk}/change/").status_code == 200  # view only
    assert client.get(f"/admin/datasets/dataset/{dataset.pk}/delete/").status_code == 403
