import pytest

from apps.audit.models import AuditEvent
from apps.clusters import services
from apps.clusters.models import ClusterGrant
from apps.core import crypto
from tests.factories import ClusterFactory, ClusterGrantFactory

pytestmark = pytest.mark.django_db

STATE = {
    "partitions": [
        {
            "name": "debug",
            "state": "UP",
            "is_default": True,
            "time_limit_minutes": 60,
            "nodes": ["n1"],
            "total_cpus": 8,
            "total_memory_mb": 16000,
            "total_gpus": 1,
        }
    ],
    "nodes": [
        {
            "name": "n1",
            "state": "idle",
            "cpus": 8,
            "memory_mb": 16000,
            "gpus": 1,
            "gres": "gpu:a100:1",
            "partitions": ["debug"],
            "cpus_allocated": 0,
            "free_memory_mb": 15000,
            "reason": "",
        }
    ],
    "read_at": "2026-01-01T00:00:00+00:00",
}


@pytest.fixture
def as_alice(api, alice):
    api.force_authenticate(alice)
    return api


def test_the_cluster_list_shows_health_and_my_grant(as_alice, alice, bob):
    mine = ClusterGrantFactory(
        user=alice, cluster=ClusterFactory(name="hpc1", reachable=True), cluster_username="alice01"
    )
    ClusterGrantFactory(user=bob, cluster=ClusterFactory(name="hpc2", reachable=False, last_error="Connection refused"))
    ClusterFactory(name="retired", is_active=False)

    body = as_alice.get("/api/v1/clusters/").json()

    by_name = {c["name"]: c for c in body["results"]}
    assert set(by_name) == {"hpc1", "hpc2"}  # an inactive cluster without a grant of mine is not listed
    assert by_name["hpc1"]["health"]["reachable"] is True
    assert by_name["hpc1"]["my_grant"] == {"id": str(mine.uuid), "status": "active", "cluster_username": "alice01"}
    assert by_name["hpc2"]["health"] == {"reachable": False, "last_error": "Connection refused", "checked_at": None}
    assert by_name["hpc2"]["my_grant"] is None  # bob's grant is bob's


def test_a_cluster_answers_by_name_or_id_with_partitions_and_nodes(as_alice):
    cluster = ClusterFactory(name="hpc1", state=STATE)
    for ident in ("hpc1", str(cluster.uuid)):
        body = as_alice.get(f"/api/v1/clusters/{ident}/").json()
        assert body["id"] == str(cluster.uuid)
        assert body["partitions"][0]["name"] == "debug"
        assert body["nodes"][0]["cpus"] == 8 and body["nodes"][0]["gpus"] == 1
        assert body["state_read_at"] == STATE["read_at"]


def test_an_unknown_cluster_is_404(as_alice):
    assert as_alice.get("/api/v1/clusters/nope/").status_code == 404
    assert as_alice.get("/api/v1/clusters/00000000-0000-0000-0000-000000000000/").status_code == 404
    hidden = ClusterFactory(name="retired", is_active=False)
    assert as_alice.get(f"/api/v1/clusters/{hidden.name}/").status_code == 404


def test_my_grants_show_limits_and_whether_credentials_exist_never_the_secrets(as_alice, alice, root):
    grant = ClusterGrantFactory(user=alice, max_cpus=16, allowed_qos=["normal"])
    services.grant_generate_ssh_key(grant=grant, actor=root)
    services.grant_set_rest_token(grant=grant, token="tok-secret-999", expires_at=None, actor=root)
    grant.refresh_from_db()

    response = as_alice.get("/api/v1/grants/")

    [item] = response.json()["results"]
    assert item["id"] == str(grant.uuid) and item["status"] == "active" and item["usable"] is True
    assert item["limits"]["max_cpus"] == 16 and item["limits"]["allowed_qos"] == ["normal"]
    assert item["limits"]["allowed_partitions"] == ["debug"]
    assert item["has_ssh_key"] is True and item["has_rest_token"] is True
    assert item["ssh_public_key"] == grant.ssh_public_key
    text = response.content.decode()
    private = crypto.decrypt(grant.ssh_private_key_encrypted)
    assert "tok-secret-999" not in text and "PRIVATE KEY" not in text and private.splitlines()[1] not in text
    assert "encrypted" not in text


def test_charlie_sees_none_of_alices_grants(api, alice, charlie):
    ClusterGrantFactory(user=alice)
    api.force_authenticate(charlie)
    assert api.get("/api/v1/grants/").json()["results"] == []
    assert all(c["my_grant"] is None for c in api.get("/api/v1/clusters/").json()["results"])


def test_requesting_access_answers_201_and_is_audited(as_alice, alice):
    cluster = ClusterFactory(name="hpc1")
    response = as_alice.post(
        "/api/v1/grants/", {"cluster": "hpc1", "reason": "Sweep over learning rates"}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "requested" and body["cluster"] == {"id": str(cluster.uuid), "name": "hpc1"}
    assert body["cluster_username"] == "" and body["usable"] is False
    assert AuditEvent.objects.get(action="grant.requested").actor == alice
    assert ClusterGrant.objects.get(uuid=body["id"]).user == alice


def test_a_request_needs_a_reason_and_a_known_cluster(as_alice):
    ClusterFactory(name="hpc1")
    response = as_alice.post("/api/v1/grants/", {"cluster": "hpc1", "reason": ""}, format="json")
    assert response.status_code == 400 and "Say why" in response.json()["reason"][0]
    assert as_alice.post("/api/v1/grants/", {"cluster": "nope", "reason": "x"}, format="json").status_code == 404
    as_alice.post("/api/v1/grants/", {"cluster": "hpc1", "reason": "x"}, format="json")
    again = as_alice.post("/api/v1/grants/", {"cluster": "hpc1", "reason": "x"}, format="json")
    assert again.status_code == 409 and "already" in again.json()["detail"]


def test_the_api_needs_a_token(api):
    assert api.get("/api/v1/clusters/").status_code in (401, 403)
    assert api.get("/api/v1/grants/").status_code in (401, 403)


def test_a_token_works_for_the_cluster_api(api, alice):
    from apps.accounts.services import token_create

    ClusterFactory(name="hpc1")
    _, key = token_create(user=alice, name="cli")
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert [c["name"] for c in api.get("/api/v1/clusters/").json()["results"]] == ["hpc1"]


def test_the_cluster_list_costs_a_fixed_number_of_queries(as_alice, alice, django_assert_max_num_queries):
    for i in range(5):
        ClusterGrantFactory(user=alice, cluster=ClusterFactory(name=f"c{i}"))
    with django_assert_max_num_queries(6):
        as_alice.get("/api/v1/clusters/")
    for i in range(5, 15):
        ClusterGrantFactory(user=alice, cluster=ClusterFactory(name=f"c{i}"))
    with django_assert_max_num_queries(6):
        as_alice.get("/api/v1/clusters/")


def test_a_cluster_says_whether_slurm_enforces_its_grants(as_alice, root):
    from apps.clusters.models import Cluster
    from tests.factories import ClusterGrantFactory

    cluster = ClusterFactory(name="hpc1", state=STATE)
    body = as_alice.get("/api/v1/clusters/hpc1/").json()
    assert body["grants_enforced_by_slurm"] is False
    assert body["enforcement_note"].startswith("Grants are not enforced by Slurm on this cluster")
    operator = ClusterGrantFactory(cluster=cluster, user=root, cluster_username="slurmops")
    Cluster.objects.filter(pk=cluster.pk).update(operator_grant=operator)
    body = as_alice.get("/api/v1/clusters/hpc1/").json()
    assert (body["grants_enforced_by_slurm"], body["enforcement_note"]) == (True, "")
