"""Four eyes, enforced by the database as well as the services: an approval by the
requester is refused, and a request's requester can never be changed afterwards, whatever
path the write takes (API, admin, a bulk action, a shell)."""

from django.db import migrations

POSTGRES = """
CREATE OR REPLACE FUNCTION axle_four_eyes() RETURNS trigger AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM serving_deployment d WHERE d.id = NEW.deployment_id AND d.requested_by_id = NEW.approver_id)
    THEN RAISE EXCEPTION 'four eyes: the requester cannot decide their own deployment request'
        USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER serving_approval_four_eyes BEFORE INSERT OR UPDATE ON serving_deploymentapproval
    FOR EACH ROW EXECUTE FUNCTION axle_four_eyes();

CREATE OR REPLACE FUNCTION axle_requester_fixed() RETURNS trigger AS $$
BEGIN
    IF NEW.requested_by_id <> OLD.requested_by_id THEN
        RAISE EXCEPTION 'four eyes: a deployment request keeps its requester' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER serving_deployment_requester_fixed BEFORE UPDATE ON serving_deployment
    FOR EACH ROW EXECUTE FUNCTION axle_requester_fixed();
"""

POSTGRES_DROP = """
DROP TRIGGER IF EXISTS serving_approval_four_eyes ON serving_deploymentapproval;
DROP TRIGGER IF EXISTS serving_deployment_requester_fixed ON serving_deployment;
DROP FUNCTION IF EXISTS axle_four_eyes();
DROP FUNCTION IF EXISTS axle_requester_fixed();
"""

SQLITE = [
    """CREATE TRIGGER serving_approval_four_eyes_insert BEFORE INSERT ON serving_deploymentapproval
    WHEN EXISTS (SELECT 1 FROM serving_deployment d WHERE d.id = NEW.deployment_id AND d.requested_by_id = NEW.approver_id)
    BEGIN SELECT RAISE(ABORT, 'four eyes: the requester cannot decide their own deployment request'); END""",
    """CREATE TRIGGER serving_approval_four_eyes_update BEFORE UPDATE ON serving_deploymentapproval
    WHEN EXISTS (SELECT 1 FROM serving_deployment d WHERE d.id = NEW.deployment_id AND d.requested_by_id = NEW.approver_id)
    BEGIN SELECT RAISE(ABORT, 'four eyes: the requester cannot decide their own deployment request'); END""",
    """CREATE TRIGGER serving_deployment_requester_fixed BEFORE UPDATE OF requested_by_id ON serving_deployment
    WHEN NEW.requested_by_id <> OLD.requested_by_id
    BEGIN SELECT RAISE(ABORT, 'four eyes: a deployment request keeps its requester'); END""",
]


def install(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE:
            schema_editor.execute(statement, params=None)


def remove(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_DROP, params=None)
    elif vendor == "sqlite":
        for name in ("serving_approval_four_eyes_insert", "serving_approval_four_eyes_update",
                     "serving_deployment_requester_fixed"):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}", params=None)


class Migration(migrations.Migration):
    dependencies = [("serving", "0001_initial")]
    operations = [migrations.RunPython(install, remove)]
