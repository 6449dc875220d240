import base64
import json

import pytest
from django.core.exceptions import ValidationError as DjangoValidationError

from apps.audit.models import AuditEvent
from apps.clusters import services
from apps.clusters.models import Cluster, ClusterGrant
from apps.core import crypto
from apps.core.errors import Conflict, ValidationFailed
from tests.factories import ClusterFactory, ClusterGrantFactory

pytestmark = pytest.mark.django_db

# A real ed25519 host key and its fingerprint as `ssh-keygen -lf` prints it.
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB1Xd7bhkF2rR5XwVMHvE7+Zq2bEoSRp2cCRiUi7Yq0P"


def fingerprint_of(line: str) -> str:
    from apps.integrations.slurm.ssh import PinnedHostKey

    return min(PinnedHostKey.parse(line).fingerprints)


def actions() -> list[str]:
    return list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))


def all_audit_text() -> str:
    return json.dumps(list(AuditEvent.objects.values("before", "after", "subject_text")))


def test_it_pins_a_host_key_whose_fingerprint_the_admin_confirmed(root):
    cluster = ClusterFactory()
    services.cluster_set_host_key(
        cluster=cluster, host_key=HOST_KEY + "\n", confirmed_fingerprint=fingerprint_of(HOST_KEY), actor=root
    )
    cluster.refresh_from_db()
    assert cluster.host_key == HOST_KEY
    assert cluster.host_key_fingerprint == fingerprint_of(HOST_KEY)
    event = AuditEvent.objects.get(action="cluster.host_key_pinned")
    assert event.after == {"host_key_fingerprint": fingerprint_of(HOST_KEY)}
    assert event.actor == root


def test_it_accepts_a_known_hosts_line_and_a_fingerprint_without_prefix(root):
    cluster = ClusterFactory()
    services.cluster_set_host_key(
        cluster=cluster,
        host_key=f"[127.0.0.1]:2222 {HOST_KEY}",
        confirmed_fingerprint=fingerprint_of(HOST_KEY).removeprefix("SHA256:"),
        actor=root,
    )
    assert Cluster.objects.get(pk=cluster.pk).host_key_fingerprint == fingerprint_of(HOST_KEY)


def test_it_refuses_to_pin_a_host_key_whose_fingerprint_does_not_match(root):
    cluster = ClusterFactory()
    with pytest.raises(ValidationFailed, match="is not the key's fingerprint"):
        services.cluster_set_host_key(
            cluster=cluster, host_key=HOST_KEY, confirmed_fingerprint=fingerprint_of(OTHER_KEY), actor=root
        )
    cluster.refresh_from_db()
    assert cluster.host_key == "" and cluster.host_key_fingerprint == ""
    assert "cluster.host_key_pinned" not in actions()


def test_it_refuses_garbage_for_a_host_key(root):
    with pytest.raises(ValidationFailed, match="not an SSH public host key"):
        services.cluster_set_host_key(
            cluster=ClusterFactory(), host_key="ssh-ed25519 not-base64!", confirmed_fingerprint="SHA256:x", actor=root
        )


def test_it_refuses_a_short_jwt_key_and_stores_a_good_one_encrypted(root):
    cluster = ClusterFactory(transport=Cluster.Transport.REST)
    with pytest.raises(ValidationFailed, match="at least 16 bytes"):
        services.cluster_set_jwt_key(cluster=cluster, key=b"short", actor=root)
    key = b"k" * 32
    services.cluster_set_jwt_key(cluster=cluster, key=key, actor=root)
    cluster.refresh_from_db()
    assert cluster.has_jwt_key
    assert base64.b64decode(crypto.decrypt(cluster.jwt_key_encrypted)) == key
    assert base64.b64encode(key).decode() not in all_audit_text()


def test_a_request_waits_for_an_admin_and_is_audited(alice):
    cluster = ClusterFactory()
    grant = services.grant_request(user=alice, cluster=cluster, reason="Train the detector")
    assert grant.status == ClusterGrant.Status.REQUESTED
    assert not grant.is_usable
    event = AuditEvent.objects.get(action="grant.requested")
    assert event.actor == alice and event.after == {"reason": "Train the detector"}


def test_it_rejects_a_request_without_a_reason_or_a_second_open_request(alice):
    cluster = ClusterFactory()
    with pytest.raises(ValidationFailed, match="Say why"):
        services.grant_request(user=alice, cluster=cluster, reason="  ")
    services.grant_request(user=alice, cluster=cluster, reason="first")
    with pytest.raises(Conflict, match="already have access"):
        services.grant_request(user=alice, cluster=cluster, reason="second")


def test_approval_needs_a_cluster_username_and_is_audited_with_the_limits(alice, root):
    grant = services.grant_request(user=alice, cluster=ClusterFactory(), reason="x")
    with pytest.raises(ValidationFailed, match="cluster username"):
        services.grant_approve(grant=grant, actor=root, cluster_username="")
    services.grant_approve(grant=grant, actor=root, cluster_username="alice01", max_cpus=8, comment="ok")
    grant.refresh_from_db()
    assert grant.status == ClusterGrant.Status.ACTIVE and grant.decided_by == root and grant.is_usable
    event = AuditEvent.objects.get(action="grant.approved")
    assert event.actor == root
    assert event.before == {"status": "requested"}
    assert event.after["cluster_username"] == "alice01" and event.after["max_cpus"] == 8


def test_a_decline_is_final_and_audited(alice, root):
    grant = services.grant_request(user=alice, cluster=ClusterFactory(), reason="x")
    services.grant_decline(grant=grant, actor=root, comment="Use the other cluster")
    assert AuditEvent.objects.get(action="grant.declined").after == {
        "status": "declined",
        "comment": "Use the other cluster",
    }
    with pytest.raises(Conflict):
        services.grant_approve(grant=grant, actor=root, cluster_username="alice")


def test_a_racing_second_approval_loses(alice, root):
    grant = services.grant_request(user=alice, cluster=ClusterFactory(), reason="x")
    stale = ClusterGrant.objects.get(pk=grant.pk)
    services.grant_decline(grant=grant, actor=root)
    with pytest.raises(Conflict):
        services.grant_approve(grant=stale, actor=root, cluster_username="alice")
    assert ClusterGrant.objects.get(pk=grant.pk).status == ClusterGrant.Status.DECLINED


def test_changing_limits_audits_only_what_changed(alice, root):
    grant = ClusterGrantFactory(user=alice, allowed_partitions=["debug"], max_cpus=4)
    services.grant_update_limits(grant=grant, actor=root, allowed_partitions=["debug", "gpu"], max_cpus=4, max_gpus=2)
    event = AuditEvent.objects.get(action="grant.updated")
    assert event.before == {"allowed_partitions": ["debug"], "max_gpus": None}
    assert event.after == {"allowed_partitions": ["debug", "gpu"], "max_gpus": 2}
    services.grant_update_limits(grant=grant, actor=root, max_cpus=4)
    assert actions().count("grant.updated") == 1


def test_an_active_grant_keeps_a_cluster_username(alice, root):
    grant = ClusterGrantFactory(user=alice)
    with pytest.raises(ValidationFailed, match="cluster username"):
        services.grant_update_limits(grant=grant, actor=root, cluster_username=" ")


def test_credentials_are_encrypted_and_never_in_the_audit_trail(alice, root):
    grant = ClusterGrantFactory(user=alice)
    public = services.grant_generate_ssh_key(grant=grant, actor=root)
    grant.refresh_from_db()
    pem = crypto.decrypt(grant.ssh_private_key_encrypted)
    assert "OPENSSH PRIVATE KEY" in pem and "PRIVATE KEY" not in grant.ssh_private_key_encrypted
    assert public.startswith("ssh-ed25519 ") and grant.ssh_public_key == public
    services.grant_set_rest_token(grant=grant, token="tok-very-secret-123", expires_at=None, actor=root)
    text = all_audit_text()
    assert "PRIVATE KEY" not in text and pem.splitlines()[1] not in text
    assert "tok-very-secret-123" not in text
    assert public in text  # the public key is not a secret: the audit says which key was installed


def test_an_uploaded_private_key_that_is_not_one_is_refused_without_echoing_it(alice, root):
    grant = ClusterGrantFactory(user=alice)
    with pytest.raises(ValidationFailed) as exc:
        services.grant_set_ssh_key(
            grant=grant, private_key="-----BEGIN OPENSSH PRIVATE KEY-----\nsecretstuff\n", actor=root
        )
    assert "secretstuff" not in exc.value.message


def test_health_changes_are_audited_only_when_reachability_changes():
    cluster = ClusterFactory()
    services.cluster_record_health(cluster_id=cluster.pk, reachable=True)
    services.cluster_record_health(cluster_id=cluster.pk, reachable=True)
    services.cluster_record_health(cluster_id=cluster.pk, reachable=False, error="Connection refused")
    services.cluster_record_health(cluster_id=cluster.pk, reachable=False, error="Connection refused")
    services.cluster_record_health(cluster_id=cluster.pk, reachable=True)
    assert actions() == ["cluster.became_reachable", "cluster.became_unreachable", "cluster.became_reachable"]
    cluster.refresh_from_db()
    assert cluster.reachable is True and cluster.last_error == "" and cluster.checked_at is not None


def test_creating_and_changing_a_cluster_is_audited(root):
    cluster = services.cluster_create(
        actor=root, name="hpc1", transport="ssh", login_host="login.hpc1", job_root="/scratch/{username}/axle"
    )
    services.cluster_update(cluster=cluster, actor=root, login_port=2222, login_host="login.hpc1")
    update = AuditEvent.objects.get(action="cluster.updated")
    assert update.before == {"login_port": 22} and update.after == {"login_port": 2222}
    with pytest.raises(Exception, match="job root must contain"):
        services.cluster_create(actor=root, name="hpc2", transport="ssh", login_host="x", job_root="/scratch/shared")


@pytest.mark.parametrize("username", ["alice,root", "alice root", "alice\nroot", "-alice", "a" * 65])
def test_a_cluster_username_slurm_could_widen_is_refused_everywhere(alice, root, username):
    cluster = ClusterFactory(name="hpc1")
    with pytest.raises(ValidationFailed, match="not a plain name"):
        services.grant_create(user=alice, cluster=cluster, cluster_username=username, actor=root)
    requested = services.grant_request(user=alice, cluster=cluster, reason="Training runs")
    with pytest.raises(ValidationFailed, match="not a plain name"):
        services.grant_approve(grant=requested, actor=root, cluster_username=username)
    with pytest.raises(ValidationFailed, match="not a plain name"):
        services.grant_update_limits(grant=requested, actor=root, cluster_username=username)
    requested.cluster_username = username
    with pytest.raises(DjangoValidationError):
        requested.full_clean()
    assert ClusterGrant.objects.get(pk=requested.pk).status == ClusterGrant.Status.REQUESTED


@pytest.mark.parametrize(
    ("field", "names"),
    [("allowed_partitions", ["debug,gpu"]), ("allowed_accounts", ["vision\t"]), ("allowed_qos", ["a b"])],
)
def test_partition_account_and_qos_names_follow_the_same_rule(alice, root, field, names):
    grant = ClusterGrantFactory(user=alice)
    with pytest.raises(ValidationFailed, match="not a plain name"):
        services.grant_update_limits(grant=grant, actor=root, **{field: names})
    with pytest.raises(ValidationFailed, match="not a plain name"):
        services.grant_create(
            user=alice, cluster=ClusterFactory(name="hpc2"), cluster_username="alice01", actor=root, **{field: names}
        )
    setattr(grant, field, names)
    with pytest.raises(DjangoValidationError):
        grant.full_clean()
