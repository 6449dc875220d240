"""The Django admin as an administrator uses it: every change goes through the services."""

import base64

import pytest

from apps.audit.models import AuditEvent
from apps.clusters.models import Cluster, ClusterGrant
from apps.core import crypto
from tests.clusters.test_services import HOST_KEY, OTHER_KEY, fingerprint_of
from tests.factories import ClusterFactory, ClusterGrantFactory

pytestmark = pytest.mark.django_db

CLUSTER_FORM = {
    "name": "hpc1",
    "description": "Our GPU cluster",
    "transport": "ssh",
    "is_active": "on",
    "login_host": "login.hpc1",
    "login_port": "22",
    "slurm_bin_dir": "/usr/bin",
    "rest_url": "",
    "rest_api_version": "v0.0.38",
    "job_root": "/scratch/{username}/axle-jobs",
    "mlflow_tracking_uri": "",
    "new_host_key": "",
    "confirmed_fingerprint": "",
    "jwt_key_base64": "",
}


@pytest.fixture
def admin_client(client, root):
    client.force_login(root)
    return client


def grant_form(grant: ClusterGrant, **changes) -> dict:
    data = {
        "cluster_username": grant.cluster_username,
        "allowed_partitions": ", ".join(grant.allowed_partitions),
        "allowed_accounts": "",
        "allowed_qos": "",
        "max_nodes": "",
        "max_cpus": "",
        "max_gpus": "",
        "max_mem_mb": "",
        "max_time_minutes": "",
        "max_active_jobs": "",
        "max_array_size": "",
        "valid_until_0": "",
        "valid_until_1": "",
        "decision": "",
        "decision_note": "",
        "ssh_private_key_text": "",
        "rest_token": "",
        "rest_token_expires_0": "",
        "rest_token_expires_1": "",
    }
    data.update(changes)
    return data


def test_an_admin_adds_a_cluster_and_pins_its_host_key(admin_client, root):
    form = dict(CLUSTER_FORM, new_host_key=HOST_KEY, confirmed_fingerprint=fingerprint_of(HOST_KEY))
    response = admin_client.post("/admin/clusters/cluster/add/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    cluster = Cluster.objects.get(name="hpc1")
    assert cluster.host_key == HOST_KEY and cluster.host_key_fingerprint == fingerprint_of(HOST_KEY)
    assert {"cluster.created", "cluster.host_key_pinned"} <= set(AuditEvent.objects.values_list("action", flat=True))
    assert AuditEvent.objects.get(action="cluster.created").actor == root


def test_the_admin_refuses_a_host_key_whose_fingerprint_does_not_match(admin_client):
    cluster = ClusterFactory(name="hpc1")
    form = dict(CLUSTER_FORM, new_host_key=HOST_KEY, confirmed_fingerprint=fingerprint_of(OTHER_KEY))
    response = admin_client.post(f"/admin/clusters/cluster/{cluster.pk}/change/", form)
    assert response.status_code == 200
    assert "is not the key&#x27;s fingerprint" in response.content.decode()
    cluster.refresh_from_db()
    assert cluster.host_key == ""
    assert not AuditEvent.objects.filter(action__in=["cluster.host_key_pinned", "cluster.updated"]).exists()


def test_the_admin_stores_a_jwt_key_and_shows_only_that_it_is_set(admin_client):
    cluster = ClusterFactory(name="hpc1", transport="rest")
    key = b"s3cr3t-jwt-signing-key-0123456789"
    encoded = base64.b64encode(key).decode()
    form = dict(CLUSTER_FORM, transport="rest", rest_url="http://hpc1:6820", jwt_key_base64=encoded)
    assert admin_client.post(f"/admin/clusters/cluster/{cluster.pk}/change/", form).status_code == 302
    cluster.refresh_from_db()
    assert base64.b64decode(crypto.decrypt(cluster.jwt_key_encrypted)) == key
    page = admin_client.get(f"/admin/clusters/cluster/{cluster.pk}/change/").content.decode()
    assert encoded not in page and cluster.jwt_key_encrypted not in page
    assert ">set<" in page.replace("\n", "")


def test_the_admin_accepts_a_jwt_key_file(admin_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    cluster = ClusterFactory(name="hpc1", transport="rest")
    key = bytes(range(32))
    form = dict(CLUSTER_FORM, transport="rest", rest_url="http://hpc1:6820")
    form["jwt_key_file"] = SimpleUploadedFile("jwt_hs256.key", key)
    assert admin_client.post(f"/admin/clusters/cluster/{cluster.pk}/change/", form).status_code == 302
    cluster.refresh_from_db()
    assert base64.b64decode(crypto.decrypt(cluster.jwt_key_encrypted)) == key


def test_the_cluster_list_shows_health(admin_client):
    ClusterFactory(name="up", reachable=True)
    ClusterFactory(name="down", reachable=False, last_error="Connection refused")
    page = admin_client.get("/admin/clusters/cluster/").content.decode()
    assert "reachable" in page and "unreachable" in page and "Connection refused" in page


def test_an_admin_approves_a_request_with_the_bulk_action(admin_client, alice, root):
    grant = ClusterGrantFactory(user=alice, status=ClusterGrant.Status.REQUESTED, cluster_username="alice01")
    unnamed = ClusterGrantFactory(status=ClusterGrant.Status.REQUESTED, cluster_username="")
    response = admin_client.post(
        "/admin/clusters/clustergrant/",
        {"action": "approve_selected", "_selected_action": [grant.pk, unnamed.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert "Approved 1 grant(s)" in page and "set its cluster username first" in page
    grant.refresh_from_db()
    unnamed.refresh_from_db()
    assert grant.status == ClusterGrant.Status.ACTIVE and grant.decided_by == root
    assert unnamed.status == ClusterGrant.Status.REQUESTED
    assert AuditEvent.objects.get(action="grant.approved").actor == root


def test_decline_and_revoke_actions_go_through_the_state_machine(admin_client):
    requested = ClusterGrantFactory(status=ClusterGrant.Status.REQUESTED)
    active = ClusterGrantFactory()
    admin_client.post(
        "/admin/clusters/clustergrant/", {"action": "decline_selected", "_selected_action": [requested.pk]}
    )
    admin_client.post(
        "/admin/clusters/clustergrant/", {"action": "revoke_selected", "_selected_action": [active.pk, requested.pk]}
    )
    requested.refresh_from_db()
    active.refresh_from_db()
    assert requested.status == ClusterGrant.Status.DECLINED and active.status == ClusterGrant.Status.REVOKED
    grant_events = AuditEvent.objects.filter(action__startswith="grant.").order_by("seq")
    assert list(grant_events.values_list("action", flat=True)) == ["grant.declined", "grant.revoked"]


def test_an_admin_sets_username_and_limits_and_approves_in_the_form(admin_client, alice, root):
    grant = ClusterGrantFactory(
        user=alice, status=ClusterGrant.Status.REQUESTED, cluster_username="", allowed_partitions=[]
    )
    form = grant_form(
        grant,
        cluster_username="alice01",
        allowed_partitions="debug, gpu,debug",
        allowed_qos="normal",
        max_cpus="16",
        decision="approve",
        decision_note="Welcome",
    )
    response = admin_client.post(f"/admin/clusters/clustergrant/{grant.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:4000]
    grant.refresh_from_db()
    assert grant.status == ClusterGrant.Status.ACTIVE and grant.cluster_username == "alice01"
    assert grant.allowed_partitions == ["debug", "gpu"] and grant.allowed_qos == ["normal"] and grant.max_cpus == 16
    assert grant.decision_comment == "Welcome"
    updated = AuditEvent.objects.get(action="grant.updated")
    assert updated.before == {"allowed_partitions": [], "allowed_qos": [], "max_cpus": None, "cluster_username": ""}
    assert updated.after == {
        "allowed_partitions": ["debug", "gpu"],
        "allowed_qos": ["normal"],
        "max_cpus": 16,
        "cluster_username": "alice01",
    }
    assert AuditEvent.objects.get(action="grant.approved").actor == root


def test_the_form_refuses_to_approve_without_a_username(admin_client):
    grant = ClusterGrantFactory(status=ClusterGrant.Status.REQUESTED, cluster_username="")
    response = admin_client.post(
        f"/admin/clusters/clustergrant/{grant.pk}/change/", grant_form(grant, decision="approve")
    )
    assert response.status_code == 200
    assert "Set the cluster username" in response.content.decode()
    assert ClusterGrant.objects.get(pk=grant.pk).status == ClusterGrant.Status.REQUESTED


def test_generating_a_key_pair_shows_the_public_key_and_never_the_private_one(admin_client):
    grant = ClusterGrantFactory()
    response = admin_client.post(
        "/admin/clusters/clustergrant/", {"action": "generate_ssh_keys", "_selected_action": [grant.pk]}, follow=True
    )
    grant.refresh_from_db()
    page = response.content.decode()
    assert grant.has_ssh_key and grant.ssh_public_key.startswith("ssh-ed25519 ")
    assert grant.ssh_public_key in page and "authorized_keys" in page
    private = crypto.decrypt(grant.ssh_private_key_encrypted)
    change_page = admin_client.get(f"/admin/clusters/clustergrant/{grant.pk}/change/").content.decode()
    for text in (page, change_page):
        assert "PRIVATE KEY" not in text and private.splitlines()[1] not in text
        assert grant.ssh_private_key_encrypted not in text
    # A grant that has a key keeps it unless the admin asks for a new one on the grant itself.
    response = admin_client.post(
        "/admin/clusters/clustergrant/", {"action": "generate_ssh_keys", "_selected_action": [grant.pk]}, follow=True
    )
    assert "has a key already" in response.content.decode()


def test_the_change_form_generates_a_key_and_stores_a_token_with_its_expiry(admin_client):
    grant = ClusterGrantFactory()
    form = grant_form(
        grant,
        generate_ssh_key="on",
        rest_token="tok-abc-secret",
        rest_token_expires_0="2099-01-01",
        rest_token_expires_1="12:00:00",
    )
    response = admin_client.post(f"/admin/clusters/clustergrant/{grant.pk}/change/", form, follow=True)
    grant.refresh_from_db()
    page = response.content.decode()
    assert grant.ssh_public_key in page
    assert crypto.decrypt(grant.rest_token_encrypted) == "tok-abc-secret"
    assert grant.rest_token_expires_at.year == 2099
    change_page = admin_client.get(f"/admin/clusters/clustergrant/{grant.pk}/change/").content.decode()
    assert "tok-abc-secret" not in page + change_page and "set, expires 2099-01-01" in change_page


def test_an_uploaded_private_key_is_stored_and_a_bad_one_is_not_echoed(admin_client):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    grant = ClusterGrantFactory()
    bad = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-really-a-key-but-secret\n-----END OPENSSH PRIVATE KEY-----"
    response = admin_client.post(
        f"/admin/clusters/clustergrant/{grant.pk}/change/", grant_form(grant, ssh_private_key_text=bad)
    )
    assert response.status_code == 200
    assert "not-really-a-key-but-secret" not in response.content.decode()
    assert "not an unencrypted SSH private key" in response.content.decode()

    pem = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
        .decode()
    )
    response = admin_client.post(
        f"/admin/clusters/clustergrant/{grant.pk}/change/", grant_form(grant, ssh_private_key_text=pem)
    )
    assert response.status_code == 302
    grant.refresh_from_db()
    assert crypto.decrypt(grant.ssh_private_key_encrypted).strip() == pem.strip()
    assert AuditEvent.objects.get(action="grant.ssh_key_set").after["how"] == "uploaded"


def test_an_admin_grants_access_directly(admin_client, alice, root):
    cluster = ClusterFactory()
    form = grant_form(ClusterGrant(cluster_username="alice01", allowed_partitions=["debug"]))
    form.update({"user": alice.pk, "cluster": cluster.pk})
    response = admin_client.post("/admin/clusters/clustergrant/add/", form)
    assert response.status_code == 302, response.content.decode()[:4000]
    grant = ClusterGrant.objects.get(user=alice, cluster=cluster)
    assert grant.status == ClusterGrant.Status.ACTIVE and grant.allowed_partitions == ["debug"]
    assert AuditEvent.objects.get(action="grant.created").actor == root


def test_nothing_is_deleted_from_the_admin(admin_client):
    grant = ClusterGrantFactory()
    assert admin_client.get(f"/admin/clusters/clustergrant/{grant.pk}/delete/").status_code == 403
    assert admin_client.get(f"/admin/clusters/cluster/{grant.cluster.pk}/delete/").status_code == 403


def test_the_admin_pages_open(admin_client):
    grant = ClusterGrantFactory(status=ClusterGrant.Status.REQUESTED, request_reason="Please")
    for url in (
        "/admin/clusters/cluster/",
        "/admin/clusters/cluster/add/",
        f"/admin/clusters/cluster/{grant.cluster.pk}/change/",
        "/admin/clusters/clustergrant/",
        "/admin/clusters/clustergrant/add/",
        f"/admin/clusters/clustergrant/{grant.pk}/change/",
        "/admin/clusters/clustergrant/?status__exact=requested",
    ):
        assert admin_client.get(url).status_code == 200, url


def test_rotate_secrets_command_reports_what_it_rewrote(root, alice):
    from io import StringIO

    from django.core.management import call_command

    from apps.clusters import services

    services.grant_generate_ssh_key(grant=ClusterGrantFactory(user=alice), actor=root)
    out = StringIO()
    call_command("rotate_secrets", stdout=out)
    assert "Re-encrypted 1 secrets" in out.getvalue()


def test_an_admin_designates_the_operator_grant_and_sees_the_drift(admin_client, alice, root):
    cluster = ClusterFactory(name="hpc1")
    operator = ClusterGrantFactory(cluster=cluster, user=root, cluster_username="slurmops", status="active")
    operator.ssh_private_key_encrypted = crypto.encrypt("key")
    operator.save()
    url = f"/admin/clusters/cluster/{cluster.pk}/change/"
    form = {**CLUSTER_FORM, "operator_grant": str(operator.pk), "slurm_bin_dir": "/opt/slurm/bin"}
    response = admin_client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:3000]
    cluster.refresh_from_db()
    assert (cluster.operator_grant, cluster.slurm_bin_dir) == (operator, "/opt/slurm/bin")
    assert AuditEvent.objects.filter(action="cluster.operator_set", subject_id=str(cluster.uuid)).exists()
    Cluster.objects.filter(pk=cluster.pk).update(
        enforcement={
            "checked_at": "now",
            "users": {"alice_hpc": {"desired": "no submissions", "drift": ["x: MaxWall is 1, not 2"]}},
        }
    )
    page = admin_client.get(url).content.decode()
    assert "alice_hpc" in page and "x: MaxWall is 1, not 2" in page


@pytest.mark.parametrize("path", ["usr/bin", "/usr/bin;id", "/usr/../tmp", "/opt/slurm bin", ""])
def test_slurms_folder_must_be_a_plain_absolute_path(admin_client, path):
    cluster = ClusterFactory(name="hpc1")
    response = admin_client.post(
        f"/admin/clusters/cluster/{cluster.pk}/change/", {**CLUSTER_FORM, "slurm_bin_dir": path}
    )
    assert response.status_code == 200  # the form again, with the error
    cluster.refresh_from_db()
    assert cluster.slurm_bin_dir == "/usr/bin"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cluster_username", "alice01,root"),
        ("cluster_username", "alice 01"),
        ("cluster_username", "alice\x1b01"),
        ("allowed_partitions", "debug\x1b[2J"),
        ("allowed_accounts", "vision=x"),
        ("allowed_qos", "-normal"),
    ],
)
def test_the_form_refuses_a_name_slurm_could_read_as_more_than_one(admin_client, field, value):
    grant = ClusterGrantFactory(cluster_username="alice01")
    response = admin_client.post(
        f"/admin/clusters/clustergrant/{grant.pk}/change/", grant_form(grant, **{field: value})
    )
    assert response.status_code == 200, "the form again, with the error"
    page = response.content.decode()
    assert "is not a plain name" in page or "has a space in it" in page
    grant.refresh_from_db()
    assert grant.cluster_username == "alice01" and grant.allowed_partitions == ["debug"]


def test_the_admin_shows_clusters_whose_grants_slurm_does_not_enforce(admin_client, root):
    plain = ClusterFactory(name="hpc1")
    enforced = ClusterFactory(name="hpc2")
    operator = ClusterGrantFactory(cluster=enforced, user=root, cluster_username="slurmops")
    Cluster.objects.filter(pk=enforced.pk).update(operator_grant=operator)
    listing = admin_client.get("/admin/clusters/cluster/").content.decode()
    assert listing.count("grants are not enforced by Slurm on this cluster") == 1
    page = admin_client.get(f"/admin/clusters/cluster/{plain.pk}/change/").content.decode()
    assert "Grants are not enforced by Slurm on this cluster" in page
