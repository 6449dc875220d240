"""Ways to change the audit tables behind the application's back, as a DBA or an attacker with
write access to the database would. Shared by the SQLite/PostgreSQL tamper tests."""

import hashlib
import json
import uuid

from django.db import connection

from apps.audit.chain import canonical, chain_hash


def raw(sql, params=()):
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            if cursor.fetchone()[0]:
                # Superuser-only switch that skips ordinary triggers: the worst case, a database
                # superuser; what the hub's own role may do is in test_postgres_guard.py.
                cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)


def plain_link(prev_hash, *, seq, event_uuid, created_at, action, version=1, key_id="", after=None):
    """The hash an attacker without the audit key can compute: sha256, or HMAC with a guess."""
    text = canonical(
        seq=seq,
        uuid=event_uuid,
        created_at=created_at,
        actor_id=None,
        actor_username="",
        action=action,
        subject_type="",
        subject_id="",
        subject_text="",
        request_id="",
        before=None,
        after=after,
        version=version,
        key_id=key_id,
    )
    if version == 1:
        return chain_hash(prev_hash, text)
    return hashlib.sha256(("guessed-key" + prev_hash + text).encode()).hexdigest()


def insert_event(*, seq, prev_hash, created_at, action, version=1, key_id="", after=None, sign_with=None):
    """Insert an event whose link an attacker computed: plain sha256 (version 1), a guessed key
    (version 2), or, for an insider holding it, the real key (``sign_with``)."""
    event_uuid = uuid.uuid4()
    if sign_with is not None:
        version = 2
        from apps.audit.chain import event_hash
        from apps.audit.models import AuditEvent

        event = AuditEvent(
            seq=seq, uuid=event_uuid, created_at=created_at, action=action, version=2, key_id=key_id, after=after
        )
        hash_ = event_hash(event, prev_hash, {key_id: sign_with})
    else:
        hash_ = plain_link(
            prev_hash,
            seq=seq,
            event_uuid=event_uuid,
            created_at=created_at,
            action=action,
            version=version,
            key_id=key_id,
            after=after,
        )

    raw(
        "INSERT INTO audit_auditevent (seq, uuid, created_at, actor_username, action, subject_type, subject_id,"
        " subject_text, request_id, before, after, version, key_id, prev_hash, hash)"
        " VALUES (%s,%s,%s,'',%s,'','','','',NULL,%s,%s,%s,%s,%s)",
        [
            seq,
            event_uuid.hex,
            created_at,
            action,
            None if after is None else json.dumps(after),
            version,
            key_id,
            prev_hash,
            hash_,
        ],
    )
    return hash_


def set_head(seq, hash_):
    raw("UPDATE audit_auditchainhead SET seq = %s, hash = %s WHERE id = 1", [seq, hash_])
