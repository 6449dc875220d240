"""Key the chain: each event records its canonical version and the audit key that signed it.

Existing events are version 1 (plain sha256) and verify as before; nothing is re-hashed. On
PostgreSQL the head row gets a guard: it may only move forward onto the last event, and never
be deleted or truncated."""

from django.db import migrations, models

HEAD_GUARD_SQL = """
CREATE OR REPLACE FUNCTION axle_audit_head_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'audit_auditchainhead: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.id <> OLD.id OR NEW.seq < OLD.seq THEN
        RAISE EXCEPTION 'audit_auditchainhead only moves forward: #% to #% refused', OLD.seq, NEW.seq
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.seq = OLD.seq AND NEW.hash = OLD.hash THEN
        RETURN NEW;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM audit_auditevent WHERE seq = NEW.seq AND hash = NEW.hash)
       OR EXISTS (SELECT 1 FROM audit_auditevent WHERE seq > NEW.seq) THEN
        RAISE EXCEPTION 'audit_auditchainhead must name the last event: #% refused', NEW.seq
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_auditchainhead_guard
    BEFORE UPDATE OR DELETE ON audit_auditchainhead
    FOR EACH ROW EXECUTE FUNCTION axle_audit_head_guard();

CREATE TRIGGER audit_auditchainhead_no_truncate
    BEFORE TRUNCATE ON audit_auditchainhead
    FOR EACH STATEMENT EXECUTE FUNCTION axle_audit_head_guard();
"""

DROP_SQL = """
DROP TRIGGER IF EXISTS audit_auditchainhead_guard ON audit_auditchainhead;
DROP TRIGGER IF EXISTS audit_auditchainhead_no_truncate ON audit_auditchainhead;
DROP FUNCTION IF EXISTS axle_audit_head_guard();
"""


def install_head_guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(HEAD_GUARD_SQL, params=None)


def remove_head_guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_SQL, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="version",
            field=models.PositiveSmallIntegerField(default=1),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="auditevent",
            name="key_id",
            field=models.CharField(blank=True, default="", max_length=16),
            preserve_default=False,
        ),
        migrations.RunPython(install_head_guard, remove_head_guard),
    ]
