import pytest

from apps.audit.models import AuditEvent
from apps.clusters import services
from apps.clusters.models import ClusterGrant
from apps.core import crypto
from tests.clusters.test_api import STATE
from tests.factories import ClusterFactory, ClusterGrantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def test_the_cluster_list_shows_health_and_my_access(alice_client, alice):
    ClusterGrantFactory(user=alice, cluster=ClusterFactory(name="hpc1", reachable=True), cluster_username="alice01")
    ClusterFactory(name="hpc2", reachable=False, last_error="Connection refused by 10.0.0.5")
    ClusterFactory(name="hpc3")
    page = alice_client.get("/clusters/").content.decode()
    assert "hpc1" in page and "hpc2" in page and "hpc3" in page
    assert "reachable" in page and "unreachable" in page and "Connection refused by 10.0.0.5" in page
    assert "not checked yet" in page
    assert "alice01" in page
    assert page.count("Request access</summary>") == 2  # not for hpc1, where alice has access


def test_the_cluster_page_shows_partitions_nodes_and_my_grant(alice_client, alice, root):
    cluster = ClusterFactory(name="hpc1", state=STATE, reachable=True)
    grant = ClusterGrantFactory(user=alice, cluster=cluster, cluster_username="alice01", max_cpus=16)
    public = services.grant_generate_ssh_key(grant=grant, actor=root)
    grant.refresh_from_db()
    page = alice_client.get("/clusters/hpc1/").content.decode()
    assert "debug" in page and "n1" in page and "gpu:a100:1" in page and "16000 MB" in page
    assert "alice01" in page and "CPUs per job" in page and ">16<" in page
    assert public in page  # for the cluster's administrators to install
    private = crypto.decrypt(grant.ssh_private_key_encrypted)
    assert "PRIVATE KEY" not in page and private.splitlines()[1] not in page
    assert "Request access" not in page


def test_requesting_access_from_the_cluster_page(alice_client, alice):
    ClusterFactory(name="hpc1")
    response = alice_client.post("/clusters/hpc1/request/", {"reason": "Fine-tune the segmenter"}, follow=True)
    page = response.content.decode()
    assert "Access to hpc1 requested" in page and "requested" in page
    grant = ClusterGrant.objects.get(user=alice)
    assert grant.status == ClusterGrant.Status.REQUESTED and grant.request_reason == "Fine-tune the segmenter"
    assert AuditEvent.objects.filter(action="grant.requested").count() == 1


def test_a_request_without_reason_shows_the_error_inline(alice_client):
    ClusterFactory(name="hpc1")
    response = alice_client.post("/clusters/hpc1/request/", {"reason": "  "})
    assert response.status_code == 400
    assert "Say why you need access" in response.content.decode()
    assert not ClusterGrant.objects.exists()


def test_a_second_request_is_refused_inline(alice_client, alice):
    cluster = ClusterFactory(name="hpc1")
    services.grant_request(user=alice, cluster=cluster, reason="first")
    response = alice_client.post("/clusters/hpc1/request/", {"reason": "again"})
    assert response.status_code == 400
    assert "already have access" in response.content.decode()


def test_an_unknown_cluster_is_404(alice_client):
    assert alice_client.get("/clusters/nope/").status_code == 404
    assert alice_client.post("/clusters/nope/request/", {"reason": "x"}).status_code == 404


def test_my_grants_page_shows_only_mine(alice_client, alice, bob):
    ClusterGrantFactory(user=alice, cluster=ClusterFactory(name="hpc1"), cluster_username="alice01")
    ClusterGrantFactory(user=bob, cluster=ClusterFactory(name="hpc2"), cluster_username="bob01")
    page = alice_client.get("/grants/").content.decode()
    assert "alice01" in page and "hpc1" in page
    assert "bob01" not in page and "hpc2" not in page


def test_the_cluster_list_costs_a_fixed_number_of_queries(alice_client, alice, django_assert_max_num_queries):
    for i in range(3):
        ClusterGrantFactory(user=alice, cluster=ClusterFactory(name=f"c{i}"))
    with django_assert_max_num_queries(8):
        alice_client.get("/clusters/")
    for i in range(3, 13):
        ClusterGrantFactory(user=alice, cluster=ClusterFactory(name=f"c{i}"))
    with django_assert_max_num_queries(8):
        alice_client.get("/clusters/")


def test_the_cluster_page_says_when_slurm_does_not_enforce_the_grants(alice_client, root):
    from apps.clusters.models import Cluster
    from tests.factories import ClusterGrantFactory

    cluster = ClusterFactory(name="hpc1", state=STATE, reachable=True)
    assert "Grants are not enforced by Slurm on this cluster" in alice_client.get("/clusters/hpc1/").content.decode()
    operator = ClusterGrantFactory(cluster=cluster, user=root, cluster_username="slurmops")
    Cluster.objects.filter(pk=cluster.pk).update(operator_grant=operator)
    assert "not enforced by Slurm" not in alice_client.get("/clusters/hpc1/").content.decode()
