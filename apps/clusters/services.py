"""Writes for clusters and grants. Secrets are encrypted before they touch the database and
never appear in audit data, logs or pages."""

import base64
from datetime import datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core import crypto
from apps.core.errors import ValidationFailed
from apps.core.transitions import transition
from apps.integrations.slurm.ssh import PinnedHostKey, load_private_key

from .models import Cluster, ClusterGrant

LIMIT_FIELDS = (
    "allowed_partitions", "allowed_accounts", "allowed_qos", "max_nodes", "max_cpus", "max_gpus", "max_mem_mb",
    "max_time_minutes", "max_active_jobs", "max_array_size", "valid_until",
)


def _limits_snapshot(grant: ClusterGrant) -> dict:
    return {f: getattr(grant, f) for f in LIMIT_FIELDS}


def cluster_set_host_key(*, cluster: Cluster, host_key: str, confirmed_fingerprint: str, actor) -> Cluster:
    """Pin the login node's host key once an administrator confirmed its fingerprint."""
    try:
        pinned = PinnedHostKey.parse([line for line in host_key.strip().splitlines() if line.strip()])
    except Exception as exc:  # paramiko raises several types for a malformed key
        raise ValidationFailed(f"That is not an SSH public host key: {exc}") from None
    confirmed = confirmed_fingerprint.strip()
    if confirmed not in pinned.fingerprints:
        raise ValidationFailed(
            f"The fingerprint you confirmed ({confirmed or 'none'}) is not the key's fingerprint "
            f"({', '.join(sorted(pinned.fingerprints))}). Check it with the cluster's administrators."
        )
    with transaction.atomic():
        before = {"host_key_fingerprint": cluster.host_key_fingerprint}
        cluster.host_key = host_key.strip()
        cluster.host_key_fingerprint = ", ".join(sorted(pinned.fingerprints))
        cluster.save(update_fields=["host_key", "host_key_fingerprint", "updated_at"])
        audit_record(action="cluster.host_key_pinned", subject=cluster, actor=actor, before=before,
                     after={"host_key_fingerprint": cluster.host_key_fingerprint})
    return cluster


def cluster_set_jwt_key(*, cluster: Cluster, key: bytes, actor) -> Cluster:
    if len(key) < 16:
        raise ValidationFailed("A JWT signing key must be at least 16 bytes.")
    with transaction.atomic():
        cluster.jwt_key_encrypted = crypto.encrypt(base64.b64encode(key).decode("ascii"))
        cluster.save(update_fields=["jwt_key_encrypted", "updated_at"])
        audit_record(action="cluster.jwt_key_set", subject=cluster, actor=actor, after={"jwt_key": "set"})
    return cluster


def grant_request(*, user, cluster: Cluster, reason: str) -> ClusterGrant:
    reason = reason.strip()
    if not reason:
        raise ValidationFailed("Say why you need access, so an administrator can decide.")
    if not cluster.is_active:
        raise ValidationFailed(f"Cluster {cluster.name} does not accept new users right now.")
    if ClusterGrant.objects.filter(user=user, cluster=cluster, status__in=["requested", "active"]).exists():
        raise ValidationFailed(f"You already have access to {cluster.name}, or a request waiting for it.")
    with transaction.atomic():
        grant = ClusterGrant.objects.create(user=user, cluster=cluster, request_reason=reason)
        audit_record(action="grant.requested", subject=grant, actor=user, after={"reason": reason})
    return grant


def grant_create(*, user, cluster: Cluster, cluster_username: str, actor, **limits) -> ClusterGrant:
    """An administrator grants access directly (no request)."""
    if not cluster_username:
        raise ValidationFailed("A grant needs the cluster username jobs run as.")
    with transaction.atomic():
        grant = ClusterGrant.objects.create(
            user=user, cluster=cluster, cluster_username=cluster_username, status=ClusterGrant.Status.ACTIVE,
            decided_by=actor, decided_at=timezone.now(), **limits,
        )
        audit_record(action="grant.created", subject=grant, actor=actor,
                     after={"cluster_username": cluster_username, **_limits_snapshot(grant)})
    return grant


def grant_approve(*, grant: ClusterGrant, actor, cluster_username: str, comment: str = "", **limits) -> ClusterGrant:
    if not cluster_username:
        raise ValidationFailed("Set the cluster username this user's jobs run as before approving.")
    with transaction.atomic():
        for name, value in limits.items():
            setattr(grant, name, value)
        grant.cluster_username = cluster_username
        grant.save()
        transition(
            obj=grant, to=ClusterGrant.Status.ACTIVE, transitions=ClusterGrant.TRANSITIONS, action="grant.approved",
            actor=actor, fields={"decided_by": actor, "decided_at": timezone.now(), "decision_comment": comment},
            data={"cluster_username": cluster_username, **_limits_snapshot(grant)},
        )
    return grant


def grant_decline(*, grant: ClusterGrant, actor, comment: str = "") -> ClusterGrant:
    return transition(
        obj=grant, to=ClusterGrant.Status.DECLINED, transitions=ClusterGrant.TRANSITIONS, action="grant.declined",
        actor=actor, fields={"decided_by": actor, "decided_at": timezone.now(), "decision_comment": comment},
        data={"comment": comment},
    )


def grant_revoke(*, grant: ClusterGrant, actor, comment: str = "") -> ClusterGrant:
    return transition(
        obj=grant, to=ClusterGrant.Status.REVOKED, transitions=ClusterGrant.TRANSITIONS, action="grant.revoked",
        actor=actor, data={"comment": comment},
    )


def grant_generate_ssh_key(*, grant: ClusterGrant, actor) -> str:
    """Make a key pair for the grant; return the public key for the cluster's authorized_keys."""
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode("ascii")
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    public_line = f"{public.decode('ascii')} axle-{grant.cluster.name}-{grant.cluster_username or grant.user.get_username()}"
    _store_ssh_key(grant=grant, pem=pem, public_line=public_line, actor=actor, how="generated")
    return public_line


def grant_set_ssh_key(*, grant: ClusterGrant, private_key: str, actor) -> ClusterGrant:
    """Store an uploaded private key (OpenSSH or PEM, unencrypted)."""
    try:
        key = load_private_key(private_key.strip() + "\n")
    except Exception:
        # Never echo the key (or paramiko's message, which may quote it).
        raise ValidationFailed("That is not an unencrypted SSH private key (OpenSSH or PEM format).") from None
    public_line = f"{key.get_name()} {key.get_base64()}"
    _store_ssh_key(grant=grant, pem=private_key.strip() + "\n", public_line=public_line, actor=actor, how="uploaded")
    return grant


def _store_ssh_key(*, grant: ClusterGrant, pem: str, public_line: str, actor, how: str) -> None:
    with transaction.atomic():
        grant.ssh_private_key_encrypted = crypto.encrypt(pem)
        grant.ssh_public_key = public_line
        grant.save(update_fields=["ssh_private_key_encrypted", "ssh_public_key", "updated_at"])
        audit_record(action="grant.ssh_key_set", subject=grant, actor=actor,
                     after={"how": how, "public_key": public_line})


def grant_set_rest_token(*, grant: ClusterGrant, token: str, expires_at: datetime | None, actor) -> ClusterGrant:
    token = token.strip()
    if not token:
        raise ValidationFailed("Paste the slurmrestd token.")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationFailed("That token has already expired.")
    with transaction.atomic():
        grant.rest_token_encrypted = crypto.encrypt(token)
        grant.rest_token_expires_at = expires_at
        grant.save(update_fields=["rest_token_encrypted", "rest_token_expires_at", "updated_at"])
        audit_record(action="grant.rest_token_set", subject=grant, actor=actor,
                     after={"expires_at": expires_at.isoformat() if expires_at else None})
    return grant


def secrets_rotate() -> int:
    """Re-encrypt every stored secret with the newest key; return how many were rewritten."""
    count = 0
    with transaction.atomic():
        for cluster in Cluster.objects.select_for_update().exclude(jwt_key_encrypted=""):
            cluster.jwt_key_encrypted = crypto.rotate(cluster.jwt_key_encrypted)
            cluster.save(update_fields=["jwt_key_encrypted"])
            count += 1
        for grant in ClusterGrant.objects.select_for_update():
            changed = []
            for field in ("ssh_private_key_encrypted", "rest_token_encrypted"):
                if getattr(grant, field):
                    setattr(grant, field, crypto.rotate(getattr(grant, field)))
                    changed.append(field)
            if changed:
                grant.save(update_fields=changed)
                count += len(changed)
        audit_record(action="secrets.rotated", after={"count": count})
    return count
