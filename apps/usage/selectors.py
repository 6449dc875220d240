"""Usage as people may see it: their own, their teams' if they administer a team, all of it
for the hub's administrators. Figures are sums of Slurm's own resource-seconds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncMonth
from django.utils import timezone

from apps.accounts.models import Membership
from apps.clusters.models import ClusterGrant

from .models import UsageCollection, UsageRecord

GROUPS = {
    "team": ("team__name", "Team"),
    "user": ("user__username", "User"),
    "cluster": ("cluster__name", "Cluster"),
    "account": ("account", "Slurm account"),
}
METRICS = {
    "cpu_hours": ("cpu_seconds", "CPU-hours"),
    "gpu_hours": ("gpu_seconds", "GPU-hours"),
    "mem_gb_hours": ("mem_mb_seconds", "Memory GB-hours"),
    "wall_hours": ("elapsed_seconds", "Wall-clock hours"),
}
_DIVISOR = {"cpu_seconds": 3600, "gpu_seconds": 3600, "mem_mb_seconds": 3600 * 1024, "elapsed_seconds": 3600}


def sees_all_usage(user) -> bool:
    return user.is_superuser or user.is_staff


def usage_visible(user) -> QuerySet[UsageRecord]:
    qs = UsageRecord.objects.all()
    if sees_all_usage(user):
        return qs
    admin_teams = Membership.objects.filter(user=user, role=Membership.Role.ADMIN).values("team")
    return qs.filter(Q(user=user) | Q(team__in=admin_teams))


def month_start(day: date) -> datetime:
    return timezone.make_aware(datetime(day.year, day.month, 1))


def add_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 + months
    return moment.replace(year=index // 12, month=index % 12 + 1, day=1)


@dataclass
class UsageRow:
    group: str
    month: date
    jobs: int
    cpu_hours: float
    gpu_hours: float
    mem_gb_hours: float
    wall_hours: float


def usage_summary(*, user, group: str = "team", start: datetime, end: datetime, cluster: str = "") -> list[UsageRow]:
    """One row per (group, month) of jobs that ended in [start, end)."""
    field, _ = GROUPS[group]
    qs = usage_visible(user).filter(ended_at__gte=start, ended_at__lt=end)
    if cluster:
        qs = qs.filter(cluster__name=cluster)
    sums = {name: Sum(column) for name, (column, _) in METRICS.items()}
    rows = (
        qs.annotate(month=TruncMonth("ended_at"))
        .values(field, "month")
        .annotate(jobs=Count("id"), **sums)
        .order_by("month", field)
    )
    out = []
    for r in rows:
        values = {name: (r[name] or 0) / _DIVISOR[column] for name, (column, _) in METRICS.items()}
        month = r["month"]
        out.append(
            UsageRow(
                group=r[field] or "(none)",
                month=month.date() if isinstance(month, datetime) else month,
                jobs=r["jobs"],
                **values,
            )
        )
    return out


@dataclass
class BudgetRow:
    grant: ClusterGrant
    cpu_hours: float
    gpu_hours: float

    @property
    def cpu_share(self) -> float | None:
        budget = self.grant.cpu_hours_per_month
        return None if not budget else self.cpu_hours / budget

    @property
    def gpu_share(self) -> float | None:
        budget = self.grant.gpu_hours_per_month
        return None if not budget else self.gpu_hours / budget


def usage_against_budgets(*, user, month: datetime) -> list[BudgetRow]:
    """Each visible grant's usage in `month` beside its monthly budgets (blank: none)."""
    grants = ClusterGrant.objects.select_related("user", "cluster").filter(status=ClusterGrant.Status.ACTIVE)
    if not sees_all_usage(user):
        admin_teams = Membership.objects.filter(user=user, role=Membership.Role.ADMIN).values("team")
        members = Membership.objects.filter(team__in=admin_teams).values("user")
        grants = grants.filter(Q(user=user) | Q(user__in=members))
    used = {
        (r["user"], r["cluster"]): r
        for r in UsageRecord.objects.filter(ended_at__gte=month, ended_at__lt=add_months(month, 1))
        .values("user", "cluster")
        .annotate(cpu=Sum("cpu_seconds"), gpu=Sum("gpu_seconds"))
    }
    rows = []
    for grant in grants.order_by("cluster__name", "user__username"):
        r = used.get((grant.user_id, grant.cluster_id)) or {}
        rows.append(BudgetRow(grant=grant, cpu_hours=(r.get("cpu") or 0) / 3600, gpu_hours=(r.get("gpu") or 0) / 3600))
    return rows


def usage_records(*, user, start: datetime, end: datetime, cluster: str = "") -> QuerySet[UsageRecord]:
    qs = (
        usage_visible(user)
        .filter(ended_at__gte=start, ended_at__lt=end)
        .select_related("cluster", "user", "team", "job")
    )
    return qs.filter(cluster__name=cluster) if cluster else qs


def usage_collections() -> QuerySet[UsageCollection]:
    return UsageCollection.objects.select_related("cluster").order_by("cluster__name")
