"""The demo seeding of `./dev up`: the personas of the demo team, created once however often
it runs."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings

from apps.accounts.models import Membership, Team, User

pytestmark = pytest.mark.django_db


def seed(tmp_path) -> str:
    out = StringIO()
    # An empty stack folder: no local cluster to register, so only the accounts are seeded.
    with override_settings(AXLE_STACK_DIR=str(tmp_path)):
        call_command("seed_demo", stdout=out)
    return out.getvalue()


def test_it_creates_the_demo_team_and_its_personas_once(tmp_path, monkeypatch):
    monkeypatch.setenv("AXLE_DEMO_PASSWORD", "demo-pass-123")
    first = seed(tmp_path)
    seed(tmp_path)
    assert Team.objects.filter(name="vision").count() == 1
    roles = dict(Membership.objects.filter(team__name="vision").values_list("user__username", "role"))
    assert roles == {"scientist": Membership.Role.MEMBER, "approver": Membership.Role.APPROVER}
    assert list(User.objects.filter(is_superuser=True).values_list("username", flat=True)) == ["admin"]
    assert User.objects.get(username="scientist").check_password("demo-pass-123")
    assert "no local cluster" in first and "approver" in first
