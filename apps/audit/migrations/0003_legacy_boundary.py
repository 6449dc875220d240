"""Record the legacy boundary: up to which event the chain may be unkeyed (version 1).

A trail that already has events gets its boundary signed here, in the head row and in the
checkpoint file; a new one gets it with its first event (apps.audit.services). Without it,
losing the checkpoint file would let a chain re-hashed without the audit key pass as an old one.
On PostgreSQL the head row's guard also refuses to change or clear a recorded boundary."""

from django.db import migrations, models

GUARD_SQL = """
CREATE OR REPLACE FUNCTION axle_audit_boundary_guard() RETURNS trigger AS $$
BEGIN
    IF OLD.legacy_boundary <> '' AND NEW.legacy_boundary IS DISTINCT FROM OLD.legacy_boundary THEN
        RAISE EXCEPTION 'audit_auditchainhead: the legacy boundary is recorded once: change refused'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_auditchainhead_boundary_guard
    BEFORE UPDATE ON audit_auditchainhead
    FOR EACH ROW EXECUTE FUNCTION axle_audit_boundary_guard();
"""

DROP_SQL = """
DROP TRIGGER IF EXISTS audit_auditchainhead_boundary_guard ON audit_auditchainhead;
DROP FUNCTION IF EXISTS axle_audit_boundary_guard();
"""


def record_boundary(apps, schema_editor):
    from apps.audit.services import audit_legacy_boundary_record

    AuditEvent = apps.get_model("audit", "AuditEvent")
    AuditChainHead = apps.get_model("audit", "AuditChainHead")
    if AuditEvent.objects.using(schema_editor.connection.alias).exists():
        audit_legacy_boundary_record(events=AuditEvent.objects, heads=AuditChainHead.objects)


def install_guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(GUARD_SQL, params=None)


def remove_guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_SQL, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_keyed_chain")]

    operations = [
        migrations.AddField(
            model_name="auditchainhead",
            name="legacy_boundary",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.RunPython(record_boundary, migrations.RunPython.noop),
        migrations.RunPython(install_guard, remove_guard),
    ]
