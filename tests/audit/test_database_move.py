"""Moving a hub from SQLite to PostgreSQL with dumpdata/loaddata keeps its audit trail
verifiable (README: "Moving from SQLite to PostgreSQL"), and on PostgreSQL `migrate` runs as
the owner while the hub's role cannot lift the audit guards."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SEED = """
import datetime, hashlib, json, uuid
from django.db import connection
from apps.audit.chain import GENESIS, canonical, chain_hash
from apps.audit.services import audit_record
from apps.accounts.models import User

# Two events from before the chain was keyed (version 1, microsecond timestamps).
prev = GENESIS
for seq in (1, 2):
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, 123456 + seq, tzinfo=datetime.UTC)
    u = uuid.uuid4()
    text = canonical(seq=seq, uuid=u, created_at=when, actor_id=None, actor_username="", action="old.thing",
                     subject_type="", subject_id="", subject_text="", request_id="", before=None, after={"n": seq})
    h = chain_hash(prev, text)
    with connection.cursor() as c:
        c.execute("INSERT INTO audit_auditevent (seq, uuid, created_at, actor_username, action, subject_type,"
                  " subject_id, subject_text, request_id, before, after, version, key_id, prev_hash, hash)"
                  " VALUES (%s,%s,%s,'','old.thing','','','','',NULL,%s,1,'',%s,%s)",
                  [seq, u.hex, when, json.dumps({"n": seq}), prev, h])
        c.execute("UPDATE audit_auditchainhead SET seq = %s, hash = %s WHERE id = 1", [seq, h])
    prev = h
alice = User.objects.create_user("alice", password="x" * 12)
audit_record(action="user.created", subject=alice, actor=alice,
             after={"when": datetime.datetime.now(datetime.UTC), "ratio": 0.1, "big": 1e20, "name": "Zoë"})
for i in range(3):
    audit_record(action="thing.changed", after={"i": i, "f": i / 3})
"""


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "AXLE_AUDIT"))}
    env.update(DJANGO_SETTINGS_MODULE="portal.settings.local", **extra)
    return env


def _manage(env, *args):
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def empty_postgres_database():
    """A new database and a login role for the hub, both dropped afterwards."""
    db = settings.DATABASES["default"]
    server = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}"
    name = f"axle_move_{uuid.uuid4().hex[:10]}"
    role = f"{name}_app"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        yield {
            "owner": f"{server}/{name}",
            "app": f"postgres://{role}@{db['HOST']}:{db['PORT'] or 5432}/{name}",
            "role": role,
        }
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_a_hub_moves_from_sqlite_to_postgresql_with_its_audit_trail_intact(tmp_path, empty_postgres_database):
    hub = tmp_path / "hub"
    sqlite = _env(AXLE_HUB_DIR=str(hub), DATABASE_URL=f"sqlite:///{hub / 'db.sqlite3'}")
    hub.mkdir()
    _manage(sqlite, "migrate", "--noinput", "-v", "0")
    _manage(sqlite, "shell", "-c", SEED)
    assert "Audit chain OK: 6 events" in _manage(sqlite, "audit_verify")
    dump = tmp_path / "axle.json"
    _manage(
        sqlite,
        "dumpdata",
        "--exclude",
        "contenttypes",
        "--exclude",
        "auth.permission",
        "--exclude",
        "sessions",
        "--exclude",
        "admin.logentry",
        "-o",
        str(dump),
    )

    pg = empty_postgres_database
    app = _env(AXLE_HUB_DIR=str(hub), DATABASE_URL=pg["app"], DATABASE_MIGRATE_URL=pg["owner"])
    owner = _env(AXLE_HUB_DIR=str(hub), DATABASE_URL=pg["owner"])
    assert "Granted the hub's role" in _manage(app, "migrate", "--noinput")
    _manage(owner, "loaddata", str(dump))
    out = _manage(app, "audit_verify")
    assert "Audit chain OK: 6 events" in out and "1 signed checkpoints matched" in out

    # The hub's role, which the portal runs as, cannot lift the guards or rewrite history.
    with psycopg.connect(pg["app"], autocommit=True) as conn:
        for sql in (
            "ALTER TABLE audit_auditevent DISABLE TRIGGER USER",
            "DROP TRIGGER audit_auditevent_no_update_delete ON audit_auditevent",
            "UPDATE audit_auditevent SET action = 'x'",
            "DELETE FROM audit_auditevent",
            "TRUNCATE audit_auditevent",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
        assert conn.execute("SELECT count(*) FROM accounts_user").fetchone()[0] == 1
