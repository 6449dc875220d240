"""Slurm's own enforcement of a grant: the sacctmgr commands that write it, and a pure
parser for what sacctmgr shows.

A grant becomes limits on the user's associations, which a Slurm operator
(AdminLevel=Operator) may write: per job MaxWall and MaxTRES (cpu, mem, node, gres/gpu),
per user MaxJobs and MaxSubmitJobs. Allowed partitions are associations of their own
(account, user, partition) holding those limits, and the user's association without a
partition gets MaxSubmitJobs=0, so slurmctld refuses at submission a job for any other
partition or account (AssocMaxSubmitJobLimit). A job within the partitions but beyond a
per-job limit is accepted and held by Slurm (pending with reason AssocMax...Limit), never
run: refusing it at submission needs a QOS with the DenyOnLimit flag, which only a Slurm
Administrator may create.

Every field here is a name an administrator chose (users, accounts, partitions), not a
job's free text; rows are still checked, and a row that does not have exactly the fields
asked for fails the read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .names import CONTROL, check_name

ASSOC_FIELDS = ("Cluster", "Account", "User", "Partition", "MaxWall", "MaxTRES", "MaxJobs", "MaxSubmit")


class UnreadableAssociations(ValueError):
    """sacctmgr printed a row that is not the fields asked for."""


@dataclass(frozen=True)
class Limits:
    """What one grant allows, in Slurm's words. None is no limit."""

    max_wall_minutes: int | None = None
    max_cpus: int | None = None
    max_mem_mb: int | None = None
    max_gpus: int | None = None
    max_nodes: int | None = None
    max_jobs: int | None = None
    max_submit: int | None = None

    def settings(self, clear_gpus: bool = False) -> list[str]:
        """`set` words of `sacctmgr modify user` (-1 clears a limit). gres/gpu only when
        limited (or to clear it): a cluster whose accounting does not track GPUs refuses the
        whole command over it."""
        tres = [f"cpu={_n(self.max_cpus)}", f"mem={_n(self.max_mem_mb)}", f"node={_n(self.max_nodes)}"]
        if self.max_gpus is not None or clear_gpus:
            tres.append(f"gres/gpu={_n(self.max_gpus)}")
        return [
            f"MaxWall={_n(self.max_wall_minutes)}",
            f"MaxTRES={','.join(tres)}",
            f"MaxJobs={_n(self.max_jobs)}",
            f"MaxSubmitJobs={_n(self.max_submit)}",
        ]

    def shown(self) -> dict[str, str]:
        """The fields `show_assoc_args` prints for an association holding exactly these."""
        tres = ",".join(
            f"{k}={v}"
            for k, v in (
                ("cpu", self.max_cpus),
                ("mem", format_mem(self.max_mem_mb) if self.max_mem_mb is not None else None),
                ("node", self.max_nodes),
                ("gres/gpu", self.max_gpus),
            )
            if v is not None
        )
        return {
            "MaxWall": "" if self.max_wall_minutes is None else format_minutes(self.max_wall_minutes),
            "MaxTRES": tres,
            "MaxJobs": "" if self.max_jobs is None else str(self.max_jobs),
            "MaxSubmit": "" if self.max_submit is None else str(self.max_submit),
        }


def _n(value: int | None) -> str:
    return "-1" if value is None else str(value)


def format_minutes(minutes: int) -> str:
    days, rest = divmod(minutes, 24 * 60)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


def format_mem(mb: int) -> str:
    """sacctmgr prints memory in the largest unit that divides it: 2048M is '2G'."""
    for unit, size in (("P", 1 << 30), ("T", 1 << 20), ("G", 1 << 10)):
        if mb % size == 0:
            return f"{mb // size}{unit}"
    return f"{mb}M"


@dataclass(frozen=True)
class Association:
    cluster: str
    account: str
    user: str
    partition: str = ""
    limits: dict[str, str] = field(default_factory=dict, hash=False)


# ------------------------------------------------------------------ commands


def sacctmgr(*words: str) -> list[str]:
    # -i: no confirmation prompt (a sacctmgr waiting on one would hang the connection).
    return ["sacctmgr", "-i", *words]


def show_assoc_args(users: Iterable[str]) -> list[str]:
    """Every association of these users, on every cluster of the accounting database (the
    hub knows its cluster by its own name, not Slurm's ClusterName: the rows tell)."""
    names = ",".join(check_name(u, "User") for u in users)
    return [
        "sacctmgr",
        "--parsable2",
        "--noheader",
        "show",
        "assoc",
        "where",
        f"users={names}",
        f"format={','.join(ASSOC_FIELDS)}",
    ]


def show_users_args(users: Iterable[str]) -> list[str]:
    """Each user's default account: what a job without -A runs under."""
    names = ",".join(check_name(u, "User") for u in users)
    return [
        "sacctmgr",
        "--parsable2",
        "--noheader",
        "show",
        "user",
        "where",
        f"name={names}",
        "format=User,DefaultAccount",
    ]


def add_assoc_args(cluster: str, user: str, account: str, partition: str) -> list[str]:
    return sacctmgr(
        "add",
        "user",
        check_name(user, "User"),
        f"cluster={check_name(cluster, 'Cluster')}",
        f"account={check_name(account, 'Account')}",
        f"partition={check_name(partition, 'Partition')}",
    )


def modify_assoc_args(cluster: str, user: str, account: str, partition: str, *settings: str) -> list[str]:
    """`partition=''` selects the association without a partition only."""
    where = [
        f"name={check_name(user, 'User')}",
        f"cluster={check_name(cluster, 'Cluster')}",
        f"account={check_name(account, 'Account')}",
        f"partition={check_name(partition, 'Partition') if partition else ''}",
    ]
    return sacctmgr("modify", "user", "where", *where, "set", *settings)


# ------------------------------------------------------------------ parsing


def _rows(output: str, names: Sequence[str]) -> list[dict[str, str]]:
    rows = []
    for line in output.split("\n"):
        if not line:
            continue
        values = line.split("|")
        if len(values) != len(names) or CONTROL.search(line):
            raise UnreadableAssociations(f"sacctmgr printed a row of {len(values)} fields: {line[:200]!r}")
        rows.append(dict(zip(names, values, strict=True)))
    return rows


def parse_assocs(output: str) -> list[Association]:
    """Rows of `show_assoc_args`; accounts' own rows (no user) are left out."""
    return [
        Association(
            cluster=row["Cluster"],
            account=row["Account"],
            user=row["User"],
            partition=row["Partition"],
            limits={k: row[k] for k in ("MaxWall", "MaxTRES", "MaxJobs", "MaxSubmit")},
        )
        for row in _rows(output, ASSOC_FIELDS)
        if row["User"]
    ]


def parse_default_accounts(output: str) -> dict[str, str]:
    """Rows of `show_users_args`: each user's default account."""
    return {row["User"]: row["DefaultAccount"] for row in _rows(output, ("User", "DefaultAccount")) if row["User"]}
