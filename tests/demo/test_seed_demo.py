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


@pytest.mark.slurm
def test_the_demo_grants_have_sensible_limits_and_seeding_again_applies_them():
    from django.conf import settings

    from apps.clusters.models import ClusterGrant
    from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env

    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    with override_settings(AXLE_STACK_DIR=settings.AXLE_STACK_DIR):
        call_command("seed_demo", stdout=StringIO())
        grants = ClusterGrant.objects.filter(user__username="scientist")
        assert grants.count() == 2
        # an older seed's grant, without the GPU limit, is brought up to date on the next run
        grants.update(max_gpus=None)
        call_command("seed_demo", stdout=StringIO())
    for grant in ClusterGrant.objects.filter(user__username="scientist"):
        limits = dict(grant.limit_rows())
        assert limits["Max GPUs"] == "0"  # the local cluster has none
        assert limits["Max memory (MB)"] == "4,096 MB (4 GB)" and limits["Max time (minutes)"] == "60 min (1 h 00)"
        assert "no limit" not in {limits[k] for k in ("Max nodes", "Max CPUs", "Max GPUs", "Max memory (MB)")}
