"""Upgrading a hub whose trail began before the chain was keyed: migration audit.0003 signs
where its unkeyed events end, in the head row and the checkpoint file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

# Two version-1 events, as a hub at migration 0002 had them.
SEED = """
import datetime, json, uuid
from django.db import connection
from apps.audit.chain import GENESIS, canonical, chain_hash
prev = GENESIS
for seq in (1, 2):
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, seq, tzinfo=datetime.UTC)
    u = uuid.uuid4()
    text = canonical(seq=seq, uuid=u, created_at=when, actor_id=None, actor_username="", action="old.thing",
                     subject_type="", subject_id="", subject_text="", request_id="", before=None, after=None)
    h = chain_hash(prev, text)
    with connection.cursor() as c:
        c.execute("INSERT INTO audit_auditevent (seq, uuid, created_at, actor_username, action, subject_type,"
                  " subject_id, subject_text, request_id, before, after, version, key_id, prev_hash, hash)"
                  " VALUES (%s,%s,%s,'','old.thing','','','','',NULL,NULL,1,'',%s,%s)", [seq, u.hex, when, prev, h])
        c.execute("UPDATE audit_auditchainhead SET seq = %s, hash = %s WHERE id = 1", [seq, h])
    prev = h
print(prev)
"""


def _manage(hub: Path, *args: str) -> str:
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "portal.settings.local",
        "AXLE_HUB_DIR": str(hub),
        "DATABASE_URL": f"sqlite:///{hub / 'db.sqlite3'}",
    }
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_migration_0003_signs_the_boundary_of_an_old_unkeyed_trail(tmp_path):
    hub = tmp_path / "hub"
    hub.mkdir()
    _manage(hub, "migrate", "audit", "0002", "--noinput", "-v", "0")
    last_unkeyed = _manage(hub, "shell", "-c", SEED).split()[-1]
    _manage(hub, "migrate", "--noinput", "-v", "0")
    lines = [json.loads(line) for line in (hub / "audit" / "checkpoints.log").read_text().splitlines()]
    assert [(line["legacy"], line["seq"], line["hash"]) for line in lines] == [(True, 2, last_unkeyed)]
    _manage(hub, "shell", "-c", "from apps.audit.services import audit_record; audit_record(action='new.thing')")
    assert "Audit chain OK: 3 events" in _manage(hub, "audit_verify")
