"""Rotating the hub's encryption key: every stored secret, of every app, re-encrypted."""

import base64

import pytest
from cryptography.fernet import Fernet
from django.test import override_settings

from apps.audit.models import AuditEvent
from apps.clusters import services as cluster_services
from apps.clusters.models import Cluster
from apps.core import crypto
from apps.hub import services as hub_services
from tests.factories import ClusterFactory, ClusterGrantFactory

pytestmark = pytest.mark.django_db


def test_rotation_reencrypts_everything_with_the_new_key(alice, root):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    try:
        with override_settings(AXLE_ENCRYPTION_KEYS=[old]):
            crypto.reset_cache()
            cluster = ClusterFactory(transport=Cluster.Transport.REST)
            cluster_services.cluster_set_jwt_key(cluster=cluster, key=b"j" * 32, actor=root)
            grant = ClusterGrantFactory(user=alice, cluster=cluster)
            cluster_services.grant_generate_ssh_key(grant=grant, actor=root)
            cluster_services.grant_set_rest_token(grant=grant, token="rest-token-1", expires_at=None, actor=root)
            grant.refresh_from_db()
            before = grant.rest_token_encrypted

        with override_settings(AXLE_ENCRYPTION_KEYS=[new, old]):
            crypto.reset_cache()
            # Before rotation, secrets under the old key still decrypt with the new list.
            assert crypto.decrypt(before) == "rest-token-1"
            assert hub_services.secrets_rotate() == 3
            grant.refresh_from_db()
            cluster.refresh_from_db()

        with override_settings(AXLE_ENCRYPTION_KEYS=[new]):
            crypto.reset_cache()
            # After rotation the old key can go: everything reads with the new one alone.
            assert crypto.decrypt(grant.rest_token_encrypted) == "rest-token-1"
            assert "OPENSSH PRIVATE KEY" in crypto.decrypt(grant.ssh_private_key_encrypted)
            assert base64.b64decode(crypto.decrypt(cluster.jwt_key_encrypted)) == b"j" * 32
            with pytest.raises(crypto.SecretUnreadable):
                crypto.decrypt(before)
        assert AuditEvent.objects.get(action="secrets.rotated").after == {"count": 3}
    finally:
        crypto.reset_cache()
