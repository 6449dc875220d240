"""Slurm enforces the grants too (issue 9, finding 7).

The hub checks every script against its grant, but a job can run `sbatch` itself, and a user
can log in: only Slurm sees those. Where an administrator designates an operator grant on a
cluster (`Cluster.operator_grant`: a cluster account with AdminLevel=Operator), the hub writes
each grant to Slurm with sacctmgr, as apps.integrations.slurm.associations describes: the
grant's limits on the user's associations, partitions as associations of their own, every
other partition and account closed (MaxSubmitJobs=0). A periodic task keeps them in sync (grants change and expire),
records what it found on the cluster (desired against actual: the drift) and audits every
change it made.

The hub keeps the cluster usernames it has written for (`Cluster.enforcement["managed"]`):
one that no grant holds any more (renamed, grant deleted, cluster out of service) is closed,
not left with its old limits. A blank list of accounts or partitions opens only the user's
default account and the cluster's default partition, as the hub's own check allows.

Per cluster and run: two reads (sacctmgr show assoc, and show user for the default
accounts, for every managed user at once), then only the writes that differ. Nothing is
sent inside a database transaction.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core.errors import ValidationFailed
from apps.core.tasks import enqueue
from apps.integrations.slurm import associations as a
from apps.integrations.slurm.base import ClusterFiles, SlurmError, UnsupportedOperation
from apps.integrations.slurm.names import name_problem
from apps.integrations.slurm.ssh import slurm_argv

from .models import Cluster, ClusterGrant
from .transport import slurm_client

log = logging.getLogger(__name__)


def enforce_later(cluster: Cluster) -> None:
    """Queue a sync of the cluster's grants once the current transaction commits."""
    if cluster.operator_grant_id:
        enqueue("apps.clusters.enforcement.cluster_enforce_grants", cluster.pk)


def cluster_set_operator(*, cluster: Cluster, grant: ClusterGrant | None, actor) -> Cluster:
    """Designate the grant whose cluster account is a Slurm operator (None: Slurm enforces
    nothing for the hub any more; what was written stays until an administrator removes it)."""
    if grant is not None:
        if grant.cluster_id != cluster.pk or not grant.is_usable or not grant.has_ssh_key:
            raise ValidationFailed(
                "The operator grant must be an active grant on this cluster with an SSH key: sacctmgr runs over SSH."
            )
    before = cluster.operator_grant
    if (before.pk if before else None) == (grant.pk if grant else None):
        return cluster
    with transaction.atomic():
        Cluster.objects.filter(pk=cluster.pk).update(operator_grant=grant, updated_at=timezone.now())
        cluster.operator_grant = grant
        audit_record(
            action="cluster.operator_set",
            subject=cluster,
            actor=actor,
            before={"operator": before.cluster_username if before else None},
            after={"operator": grant.cluster_username if grant else None, "grant": str(grant.uuid) if grant else None},
        )
        enforce_later(cluster)
    return cluster


def enforce_all() -> int:
    """The periodic entry point: one sync per cluster that has an operator grant."""
    # Clusters taken out of service too: their users' associations are closed, not left open.
    ids = list(Cluster.objects.filter(operator_grant__isnull=False).values_list("pk", flat=True))
    for cluster_id in ids:
        enqueue("apps.clusters.enforcement.cluster_enforce_grants", cluster_id)
    return len(ids)


def limits_for(grant: ClusterGrant) -> a.Limits:
    # One active hub job may be an array: Slurm counts each task as a job, so the job counts
    # allow every active job to be a whole array.
    jobs = grant.max_active_jobs * (grant.max_array_size or 1) if grant.max_active_jobs is not None else None
    return a.Limits(
        max_wall_minutes=grant.max_time_minutes,
        max_cpus=grant.max_cpus,
        max_mem_mb=grant.max_mem_mb,
        max_gpus=grant.max_gpus,
        max_nodes=grant.max_nodes,
        max_jobs=jobs,
        max_submit=jobs,
    )


CLOSED = a.Limits(max_submit=0)


def plan(
    *,
    user: str,
    grant: ClusterGrant | None,
    assocs: list[a.Association],
    default_account: str | None = None,
    default_partition: str | None = None,
) -> tuple[list[list[str]], list[str]]:
    """The sacctmgr commands that make `user`'s associations say what `grant` allows (None:
    nothing, the grant was revoked or expired), and the differences they correct. Pure.

    A blank list of accounts or partitions means what it means to the hub's own check: the
    script may not choose, so only the user's default account (`default_account`, Slurm's
    DefaultAccount) and the cluster's default partition are open; unknown, nothing is.

    Associations are only added and limited, never deleted: one the grant no longer allows
    is closed (MaxSubmitJobs=0), so nothing the site set up by hand is lost."""
    mine = [x for x in assocs if x.user == user]
    clusters = sorted({x.cluster for x in mine})
    if len(clusters) != 1:
        found = ", ".join(clusters) or "none"
        return [], [f"{user} has associations on {len(clusters)} Slurm clusters ({found}); expected one."]
    cluster = clusters[0]
    existing = {(x.account, x.partition): x for x in mine}
    accounts = sorted({x.account for x in mine if not x.partition})
    allowed = limits_for(grant) if grant else CLOSED
    commands: list[list[str]] = []
    drift: list[str] = []
    allowed_accounts: list[str] = []
    partitions: list[str] = []
    if grant is not None:
        allowed_accounts = sorted(grant.allowed_accounts or ([default_account] if default_account else []))
        partitions = sorted(grant.allowed_partitions or ([default_partition] if default_partition else []))
        if not allowed_accounts:
            drift.append(f"{user} has no default account in Slurm: every account stays closed")
        if not partitions:
            drift.append("the cluster's default partition is not known yet: every partition stays closed")
            allowed_accounts = []

    desired: dict[tuple[str, str], a.Limits] = {key: CLOSED for key in existing}
    for account in allowed_accounts:
        desired.update({(account, p): allowed for p in partitions})
    for (account, partition), limits in sorted(desired.items()):
        where = f"{account}/{partition}" if partition else f"{account} (any partition)"
        x = existing.get((account, partition))
        if x is None:
            if account not in accounts:
                drift.append(f"{where}: {user} has no association with this account; Slurm refuses its jobs anyway")
                continue
            drift.append(f"{where}: no association")
            commands.append(a.add_assoc_args(cluster, user, account, partition))
        want = limits.shown()
        actual = x.limits if x else {}
        differs = [k for k, v in want.items() if actual.get(k, "") != v]
        if x is not None and differs:
            drift += [f"{where}: {k} is {actual.get(k) or 'unlimited'}, not {want[k] or 'unlimited'}" for k in differs]
        if x is None or differs:
            settings = limits.settings(clear_gpus="gres/gpu" in actual.get("MaxTRES", ""))
            commands.append(a.modify_assoc_args(cluster, user, account, partition, *settings))
    return commands, drift


def managed_usernames(cluster: Cluster) -> set[str]:
    """Every cluster username the hub has written limits for on this cluster: the last
    report's list, and its users for reports written before the list was kept. A username
    that drops out of the grants (renamed, grant deleted, cluster taken out of service)
    stays here, so its associations are closed rather than left with old limits."""
    last = cluster.enforcement or {}
    return {str(u) for u in [*last.get("managed", []), *last.get("users", {})]}


def _grants_by_user(cluster: Cluster) -> tuple[dict[str, ClusterGrant | None], list[str]]:
    """The grant each managed cluster username should follow (None: none is usable, or
    no grant holds the username any more)."""
    operator = cluster.operator_grant.cluster_username if cluster.operator_grant else ""
    by_user: dict[str, list[ClusterGrant]] = {u: [] for u in managed_usernames(cluster) if u != operator}
    qs = ClusterGrant.objects.filter(cluster=cluster).exclude(cluster_username="").select_related("cluster")
    for grant in qs.filter(status__in=[ClusterGrant.Status.ACTIVE, ClusterGrant.Status.REVOKED]):
        if grant.cluster_username != operator:
            by_user.setdefault(grant.cluster_username, [])
            if grant.is_usable:
                by_user[grant.cluster_username].append(grant)
    chosen: dict[str, ClusterGrant | None] = {}
    problems = []
    for user, grants in sorted(by_user.items()):
        if len(grants) > 1:
            problems.append(f"{user} is the cluster account of {len(grants)} active grants; Slurm cannot hold both.")
            continue
        chosen[user] = grants[0] if grants else None
    return chosen, problems


def _run(files: ClusterFiles, bin_dir: str, args: list[str]) -> str:
    try:
        result = files.run(slurm_argv(bin_dir, args))
    except UnsupportedOperation:
        raise SlurmError("The operator grant needs an SSH key: sacctmgr runs on the login node.", True) from None
    if result.exit_status != 0:
        raise SlurmError(f"{' '.join(args[:4])} failed: {result.err or result.out.strip()}", permanent=False)
    return result.out


def cluster_enforce_grants(cluster_id: int) -> dict:
    """Compare the cluster's grants with Slurm's associations, correct the difference, and
    record both on the cluster. Safe to run twice: a second run finds nothing to do."""
    cluster = Cluster.objects.select_related("operator_grant__cluster").filter(pk=cluster_id).first()
    if cluster is None or cluster.operator_grant is None:
        return {}
    chosen, problems = _grants_by_user(cluster)
    report: dict = {"checked_at": timezone.now().isoformat(), "users": {}, "problems": problems}
    for user in list(chosen):
        # A name Slurm could read as several (stored before names were checked) is reported
        # on its own: it must not stop the cluster's other users from being enforced.
        if problem := name_problem(user, "The cluster username"):
            grant = chosen.pop(user)
            report["users"][user] = {"grant": str(grant.uuid) if grant else None, "error": problem, "drift": []}
    report["managed"] = sorted(managed_usernames(cluster) | set(chosen))
    state_default = next(
        (p.get("name") for p in (cluster.state or {}).get("partitions", []) if p.get("is_default")), None
    )
    applied: list[tuple[ClusterGrant | None, str, list[list[str]], list[str]]] = []
    try:
        with slurm_client(cluster.operator_grant) as client:
            files, bin_dir = client.files, cluster.slurm_bin_dir
            assocs = a.parse_assocs(_run(files, bin_dir, a.show_assoc_args(sorted(chosen)))) if chosen else []
            defaults = (
                a.parse_default_accounts(_run(files, bin_dir, a.show_users_args(sorted(chosen)))) if chosen else {}
            )
            for user, grant in chosen.items():
                entry = report["users"][user] = {
                    "grant": str(grant.uuid) if grant else None,
                    "desired": asdict(limits_for(grant)) if grant else "no submissions",
                    "partitions": list(grant.allowed_partitions or []) if grant else [],
                    "drift": [],
                    "corrected": False,
                }
                try:
                    commands, drift = plan(
                        user=user,
                        grant=grant,
                        assocs=assocs,
                        default_account=defaults.get(user) or None,
                        default_partition=state_default,
                    )
                except ValueError as exc:  # an account or partition name Slurm would misread
                    entry["error"] = str(exc)
                    continue
                entry["drift"] = drift
                if drift and not commands:
                    continue
                try:
                    for args in commands:
                        _run(files, bin_dir, args)
                    entry["corrected"] = bool(commands)
                except SlurmError as exc:
                    entry["error"] = str(exc)
                applied.append((grant, user, commands, drift))
    except (SlurmError, a.UnreadableAssociations) as exc:
        report["error"] = str(exc)
    with transaction.atomic():
        Cluster.objects.filter(pk=cluster.pk).update(enforcement=report)
        for grant, user, commands, drift in applied:
            if commands:
                audit_record(
                    action="grant.enforced",
                    subject=grant or cluster,
                    after={"cluster_username": user, "drift": drift, "commands": [" ".join(c) for c in commands]},
                )
    return report
