"""Models and four-eyes deployments from the terminal, with a real model in MLflow and a real
local model server: alice sees her model, asks for production, cannot approve her own request
(exit 6); ann, an approver, approves from her terminal; `deploy status --wait` sees it live."""

import json

import pytest

from apps.accounts.models import Membership
from apps.serving.models import Deployment, Environment
from tests.factories import MembershipFactory, UserFactory

from .conftest import drive

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]


def test_a_model_is_requested_approved_by_someone_else_and_goes_live(axle_for, alice, team, real_version, serving_dir):
    Environment.objects.create(name="production", required_approvals=1, approver_team=team)
    ann = MembershipFactory(user=UserFactory(username="ann"), team=team, role=Membership.Role.APPROVER).user
    name, number = real_version.model.name, real_version.number
    mine, theirs = axle_for(alice), axle_for(ann)

    models = json.loads(mine("models", "--json").stdout)
    assert [m["name"] for m in models] == [name]
    versions = mine("models", name)
    assert versions.returncode == 0 and "val_accuracy=0.97" in versions.stdout

    asked = mine("deploy", "request", name, str(number), "--env", "production", "--reason", "better", "--json")
    assert asked.returncode == 0, asked.stderr
    deployment = json.loads(asked.stdout)
    assert deployment["status"] == "requested"

    own = mine("deploy", "approve", deployment["id"])
    assert own.returncode == 6 and "four eyes" in own.stderr
    assert "requested" in mine("deploy", "status", deployment["id"][:8]).stdout

    approved = theirs("deploy", "approve", deployment["id"][:8], "--comment", "checked the lineage")
    assert approved.returncode == 0, approved.stderr
    proc = mine.start("deploy", "status", deployment["id"], "--wait", "--json")
    code, out, err = drive(proc, lambda: None, timeout=240)
    assert code == 0, err
    body = json.loads(out)
    assert body["status"] == "live" and body["approvals"][0]["approver"] == "ann"
    assert Deployment.objects.get(uuid=deployment["id"]).status == Deployment.Status.LIVE

    again = theirs("deploy", "approve", deployment["id"])
    assert again.returncode == 7 and "already decided" in again.stderr
