"""The usage page and its CSV: who sees what, sums per group and month, budgets, bad input."""

import csv
import io
from datetime import datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import Membership
from apps.usage.models import UsageRecord
from tests.factories import ClusterFactory, ClusterGrantFactory, MembershipFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db


def _record(cluster, user, team, job_id, *, cpus=2, gpus=0, mem_mb=1024, elapsed=1800, ended=None):
    return UsageRecord.objects.create(
        cluster=cluster,
        slurm_job_id=job_id,
        user=user,
        team=team,
        cluster_username=user.username,
        account="vision",
        partition="debug",
        state="COMPLETED",
        ended_at=ended or timezone.now(),
        elapsed_seconds=elapsed,
        cpus=cpus,
        gpus=gpus,
        mem_mb=mem_mb,
        cpu_seconds=cpus * elapsed,
        gpu_seconds=gpus * elapsed,
        mem_mb_seconds=mem_mb * elapsed,
    )


@pytest.fixture
def usage(alice, bob, team):
    cluster = ClusterFactory(name="hpc")
    other_team = TeamFactory(name="physics")
    carol = MembershipFactory(user=UserFactory(username="carol"), team=other_team).user
    _record(cluster, alice, team, "101", cpus=2, elapsed=3600)  # 2 CPU-h
    _record(cluster, alice, team, "102", cpus=1, gpus=1, elapsed=1800)  # 0.5 CPU-h, 0.5 GPU-h
    _record(cluster, bob, team, "103", cpus=4, elapsed=900)  # 1 CPU-h
    _record(cluster, carol, other_team, "104", cpus=8, elapsed=3600)  # 8 CPU-h
    return cluster, carol


def _csv(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_a_scientist_sees_only_their_own_usage(client, alice, usage):
    client.force_login(alice)
    rows = _csv(client.get(reverse("usage-export"), {"group": "user"}))
    assert [(r["user"], r["jobs"], r["cpu_hours"], r["gpu_hours"]) for r in rows] == [
        ("alice", "2", "2.500000", "0.500000")
    ]
    page = client.get(reverse("usage"), {"group": "user"})
    assert page.status_code == 200
    assert b"carol" not in page.content and b"bob" not in page.content.split(b"usage-budgets")[0]


def test_a_team_admin_sees_their_team_and_not_others(client, alice, bob, team, usage):
    Membership.objects.filter(user=bob, team=team).update(role=Membership.Role.ADMIN)
    client.force_login(bob)
    rows = _csv(client.get(reverse("usage-export"), {"group": "team"}))
    assert [(r["team"], r["jobs"], r["cpu_hours"]) for r in rows] == [("vision", "3", "3.500000")]


def test_an_administrator_sees_every_team_and_exports_each_job(client, root, usage):
    client.force_login(root)
    rows = _csv(client.get(reverse("usage-export"), {"group": "team"}))
    assert {(r["team"], r["cpu_hours"]) for r in rows} == {("vision", "3.500000"), ("physics", "8.000000")}
    jobs = _csv(client.get(reverse("usage-export"), {"rows": "jobs"}))
    assert sorted(r["slurm_job_id"] for r in jobs) == ["101", "102", "103", "104"]
    assert {r["slurm_job_id"]: r["mem_gb_hours"] for r in jobs}["101"] == "1.000000"
    page = client.get(reverse("usage"), {"group": "cluster", "metric": "gpu_hours"})
    assert page.status_code == 200 and b'id="usage-chart-data"' in page.content
    assert page.context["chart"]["series"] == [
        {"name": "hpc", "values": [0, 0, 0, 0, 0, 0.5]},
    ]


def test_months_bound_the_figures(client, root, alice, team, usage):
    cluster, _ = usage
    long_ago = timezone.now() - timedelta(days=400)
    _record(cluster, alice, team, "9", cpus=100, elapsed=3600, ended=long_ago)
    client.force_login(root)
    rows = _csv(client.get(reverse("usage-export"), {"group": "user"}))
    assert {r["user"]: r["cpu_hours"] for r in rows}["alice"] == "2.500000"
    month = long_ago.strftime("%Y-%m")
    rows = _csv(client.get(reverse("usage-export"), {"group": "user", "from": month, "to": month}))
    assert [(r["user"], r["month"], r["cpu_hours"]) for r in rows] == [("alice", month, "100.000000")]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"from": "2026-13"}, "“From” is not a month"),
        ({"to": "yesterday"}, "“To” is not a month"),
        ({"group": "planet"}, "Unknown grouping"),
        ({"metric": "joules"}, "Unknown measure"),
        ({"from": "2026-10", "to": "2026-01"}, "“From” comes after “To”"),
    ],
)
def test_bad_filters_get_a_clear_message_not_an_error(client, alice, usage, params, message):
    client.force_login(alice)
    page = client.get(reverse("usage"), params)
    assert page.status_code == 200
    assert message in page.content.decode()


def test_budgets_show_usage_against_the_grants_monthly_hours(client, alice, usage):
    cluster, _ = usage
    ClusterGrantFactory(user=alice, cluster=cluster, cluster_username="alice", cpu_hours_per_month=10)
    client.force_login(alice)
    page = client.get(reverse("usage"))
    budgets = page.context["budgets"]
    assert len(budgets) == 1
    assert budgets[0].cpu_hours == 2.5 and budgets[0].cpu_share == 0.25 and budgets[0].gpu_share is None
    html = page.content.decode()
    assert "25 % of 10" in html and "no budget" in html


def test_a_month_counts_the_jobs_that_ended_in_it(root, usage):
    from apps.usage import selectors

    cluster, _ = usage
    now = timezone.now()
    this_month = selectors.month_start(timezone.localdate())
    rows = selectors.usage_summary(
        user=root, group="cluster", start=this_month, end=selectors.add_months(this_month, 1)
    )
    assert [(r.group, r.jobs) for r in rows] == [("hpc", 4)]
    assert selectors.add_months(datetime(2026, 12, 1, tzinfo=now.tzinfo), 1).month == 1
