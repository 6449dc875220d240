"""A resolved request checked against a grant's limits, one sentence per problem with the
script's line number. Pure functions, no I/O."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from .names import has_control_characters
from .request import EffectiveRequest
from .sbatch import INFINITE, Directive, Problem


@dataclass(frozen=True)
class Limits:
    """A grant's limits. None means "no limit"; an empty set allows nothing."""

    allowed_partitions: frozenset[str] | None = None
    allowed_accounts: frozenset[str] | None = None
    allowed_qos: frozenset[str] | None = None
    default_partition: str | None = None
    max_nodes: int | None = None
    max_cpus: int | None = None
    max_gpus: int | None = None
    max_mem_mb: int | None = None
    max_time_minutes: int | None = None
    max_array_size: int | None = None
    job_root: str | None = None
    workdir: str | None = None  # where relative paths resolve; defaults to job_root
    # What Slurm puts for %x and %u in file names: the hub's job name, the cluster account.
    job_name: str = "sbatch"
    username: str = ""
    rest: bool = False  # the cluster is reached through slurmrestd


# Options a script may not use, with the reason told to the scientist.
FORBIDDEN: dict[str, str] = {
    "uid": "runs the job as another user, which only root may do and the hub never allows",
    "gid": "runs the job as another group, which the hub never allows",
    "get-user-env": "loads another login environment; the hub sets the job's environment",
    "chdir": "changes the working directory; the hub runs every job in its own job folder",
    "export-file": "reads environment variables from a file, which could leak the hub's secrets",
    "clusters": "sends the job to another cluster than the one you picked",
    "wait": "makes sbatch wait for the job to end, which would block the hub",
    "test-only": "only tests the script and submits nothing",
    "wrap": "replaces your script with a one-line command",
    "help": "only prints sbatch's help; remove it",
    "usage": "only prints sbatch's usage; remove it",
    "version": "only prints sbatch's version; remove it",
}

# sbatch options slurmrestd 0.0.38 has no job property for: the hub cannot send them.
NOT_OVER_REST: dict[str, str] = {
    "export": "slurmrestd takes the job's environment as a whole, not sbatch's --export list",
    "container": "slurmrestd 0.0.38 has no container property",
    "bbf": "slurmrestd takes no burst buffer file; use --bb with the specification itself",
    "nodefile": "slurmrestd cannot read a node file; use --nodelist",
    "network": "slurmrestd 0.0.38 has no network property",
    "power": "slurmrestd 0.0.38 has no power property",
    "prefer": "slurmrestd 0.0.38 has no prefer property",
    "propagate": "slurmrestd 0.0.38 has no propagate property",
    "reboot": "slurmrestd 0.0.38 has no reboot property",
    "switches": "slurmrestd 0.0.38 has no switches property",
    "extra-node-info": "slurmrestd 0.0.38 has no property for -B; use --sockets-per-node and the like",
    "overcommit": "slurmrestd 0.0.38 has no overcommit property",
    "oversubscribe": "slurmrestd 0.0.38 has no oversubscribe property",
    "contiguous": "slurmrestd 0.0.38 has no contiguous property",
}


# What sbatch makes of these hints, which slurmrestd 0.0.38 does not (checked with scontrol).
HINT_LAYOUTS = {
    "nomultithread": "--threads-per-core=1",
    "compute_bound": "--threads-per-core=1",
    "memory_bound": "--cores-per-socket=1 --threads-per-core=1",
}


def rest_refusal(option: str, value: str | None) -> str | None:
    """Why slurmrestd 0.0.38 refuses an option sbatch takes, or None."""
    if option in NOT_OVER_REST:
        return NOT_OVER_REST[option]
    if option == "hint" and (value or "").lower() in HINT_LAYOUTS:
        return (
            f"slurmrestd 0.0.38 takes --hint={value} without its thread layout; "
            f"write {HINT_LAYOUTS[(value or '').lower()]} instead"
        )
    if option == "signal" and (value or "").upper().startswith("B:"):
        return "slurmrestd 0.0.38 refuses the B: form of --signal (signal the batch shell only); drop the B:"
    return None


GPU_OPTIONS = (
    "gpus",
    "gpus-per-node",
    "gpus-per-socket",
    "gpus-per-task",
    "cpus-per-gpu",
    "mem-per-gpu",
    "ntasks-per-gpu",
)
SECRET_ENV = re.compile(r"^(AXLE_|MLFLOW_TRACKING_TOKEN$)")


# Slurm's filename patterns (man sbatch, "filename pattern"), with an optional width.
_PATTERN = re.compile(r"%(\d*)(.?)")
_NUMERIC = set("AajJnst")  # ids and indexes: digits (and a dot for %J) only


class _UnknownPattern(Exception):
    pass


def expand_filename(path: str, *, job_name: str, username: str) -> str:
    """The file name Slurm opens for `path`: %x and %u filled in, numbers as 0 (digits
    never change where a path points). Raises _UnknownPattern for any other %."""
    if "\\" in path:
        return path.replace("\\", "")  # Slurm expands nothing in a name with a backslash

    def one(m: re.Match[str]) -> str:
        letter = m.group(2)
        if letter == "%":
            return "%"
        if letter == "x":
            return job_name
        if letter == "u":
            return username
        if letter in _NUMERIC:
            return "0"
        if letter == "N":
            return "node"  # a host name: one path component
        raise _UnknownPattern(f"%{m.group(1)}{letter}")

    return _PATTERN.sub(one, path)


def _resolve_path(path: str, base: str) -> str:
    joined = path if path.startswith("/") else posixpath.join(base, path)
    return posixpath.normpath(joined)


def _inside(path: str, root: str) -> bool:
    root = posixpath.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def _script_option_problems(d: Directive, limits: Limits) -> list[Problem]:
    if d.option in FORBIDDEN:
        return [Problem(d.line, f"`{d.text}` is not allowed: it {FORBIDDEN[d.option]}.")]
    refusal = rest_refusal(d.option, d.value) if limits.rest else None
    if refusal:
        return [
            Problem(
                d.line,
                f"`{d.text}` cannot be sent to this cluster, which the hub reaches through slurmrestd: "
                f"{refusal}. Remove it, or use an SSH cluster.",
            )
        ]
    if d.value and has_control_characters(d.value):
        return [Problem(d.line, f"--{d.option} holds a control character (a tab, escape or the like); remove it.")]
    if d.option == "export" and d.value:
        return [
            Problem(
                d.line,
                f"`--export` names {name}, a variable reserved for the hub's secrets; it is never passed to jobs.",
            )
            for name in (item.split("=", 1)[0].strip() for item in d.value.split(","))
            if SECRET_ENV.match(name)
        ]
    return []


def _path_problem(d: Directive, limits: Limits, job_root: str) -> Problem | None:
    value = d.value or ""
    if value.lower() == "none" or value == "/dev/null":
        return None  # sbatch maps "none" to /dev/null
    try:
        expanded = expand_filename(value, job_name=limits.job_name, username=limits.username)
    except _UnknownPattern as exc:
        return Problem(
            d.line,
            f"--{d.option} uses {exc}, which is not one of Slurm's file name patterns "
            "(%x %u %j %A %a %J %N %n %s %t); write %% for a % sign.",
        )
    resolved = _resolve_path(expanded, limits.workdir or job_root)
    if _inside(resolved, job_root):
        return None
    shown = resolved if expanded == value else f"{resolved} (once Slurm fills in `{value}`)"
    return Problem(
        d.line,
        f"--{d.option} {'reads' if d.option == 'input' else 'writes to'} {shown}, outside your job folder "
        f"{job_root}; use a path inside it (relative paths are fine).",
    )


def check_against_limits(request: EffectiveRequest, limits: Limits) -> list[Problem]:
    """Everything in `request` that the grant does not allow, one sentence per problem.

    Identity-changing and escaping options are checked only where the script wrote them:
    the hub's own command-line options (line None) are trusted.
    """
    problems: list[Problem] = []
    w = request.winning

    def line_of(*options: str) -> int | None:
        for option in options:
            d = w.get(option)
            if d and d.line:
                return d.line
        return None

    for d in request.directives:
        if d.from_script:
            problems.extend(_script_option_problems(d, limits))

    def check_set(option: str, label: str, values: list[str], allowed: frozenset[str] | None) -> None:
        if allowed is None:
            return
        for value in values:
            if value not in allowed:
                choices = ", ".join(sorted(allowed)) or "none"
                problems.append(
                    Problem(line_of(option), f"Your grant does not allow {label} '{value}'; allowed: {choices}.")
                )

    if request.partition:
        partitions = [p for p in request.partition.split(",") if p]
    elif limits.default_partition:
        partitions = [limits.default_partition]
    else:
        partitions = []
    allowed_partitions = limits.allowed_partitions
    script_chose = "partition" in w and w["partition"].from_script
    if allowed_partitions == frozenset() and limits.default_partition and not script_chose:
        # A blank list: the script may not choose, the cluster's default partition applies
        # (what Slurm is told too, apps.clusters.enforcement).
        allowed_partitions = frozenset({limits.default_partition})
    check_set("partition", "partition", partitions, allowed_partitions)
    if request.account:
        check_set("account", "account", [request.account], limits.allowed_accounts)
    if request.qos:
        check_set("qos", "QoS", [request.qos], limits.allowed_qos)

    def over(line: int | None, what: str, value: float, limit: int | None, unit: str = "", why: str = "") -> None:
        if limit is not None and value > limit:
            shown = "unlimited" if value == INFINITE else f"{int(value)}{unit}"
            problems.append(
                Problem(line, f"This job asks for {shown} {what}{why}, more than your grant's limit of {limit}{unit}.")
            )

    over(line_of("nodes"), "nodes", request.nodes_max or request.nodes, limits.max_nodes)
    why = ""
    if request.node_cpus and request.total_cpus == request.node_cpus * request.nodes:
        why = " (every CPU of its nodes, which it has to itself)"
    elif request.mincpus and request.total_cpus == request.mincpus * request.nodes:
        why = " (--mincpus per node)"
    over(
        line_of("exclusive", "mincpus", "cpus-per-task", "ntasks", "ntasks-per-node")
        if why
        else line_of("cpus-per-task", "ntasks", "ntasks-per-node"),
        "CPUs",
        request.total_cpus,
        limits.max_cpus,
        why=why,
    )
    over(line_of("gpus", "gpus-per-node", "gres", "gpus-per-task"), "GPUs", request.gpus, limits.max_gpus)
    gpu_options = [o for o in GPU_OPTIONS if o in w] + (["gres"] if request.gpus and "gres" in w else [])
    if request.partition_gpus == 0 and gpu_options:
        # Slurm refuses it anyway; slurmrestd 22.05 was seen to corrupt its heap on it.
        problems.append(
            Problem(
                line_of(*gpu_options),
                f"--{gpu_options[0]} asks for "
                + (f"{request.gpus} GPU{'s' if request.gpus != 1 else ''}" if request.gpus else "GPUs")
                + f", and partition {request.partition} has none (0 GPUs on its nodes); Slurm would refuse it.",
            )
        )
    total_mem = request.total_memory_mb
    asked = {
        "mem": request.mem_per_node_mb,
        "mem-per-cpu": request.mem_per_cpu_mb,
        "mem-per-gpu": request.mem_per_gpu_mb,
    }
    zero = next((option for option, mb in asked.items() if mb == 0), None)
    if zero and limits.max_mem_mb is not None:
        # Slurm reads a memory of 0 in any of its forms as all the memory of the node.
        problems.append(
            Problem(
                line_of(zero),
                f"--{zero}=0 asks for all the memory of every node; ask for a fixed amount "
                f"within your grant's limit of {limits.max_mem_mb} MB.",
            )
        )
    elif total_mem is not None:
        per_cpu = request.mem_per_cpu_mb is not None or (not request.asks_memory and request.default_mem_per_cpu_mb)
        detail = f" ({request.total_cpus} CPUs x {total_mem // request.total_cpus} MB)" if per_cpu else ""
        what = "of memory in total" if request.asks_memory else "of memory by the cluster's default"
        over(
            line_of("mem", "mem-per-cpu", "mem-per-gpu", "exclusive", "mincpus"),
            what,
            total_mem,
            limits.max_mem_mb,
            " MB",
            detail,
        )
    _time_problems(request, limits, problems, line_of)
    if request.array_task_count is not None:
        over(line_of("array"), "array tasks", request.array_task_count, limits.max_array_size)

    if limits.job_root:
        # Every such directive in the script counts, even one the hub's own --output
        # overrides: a script that tries to write elsewhere is refused, not silently fixed.
        for d in request.directives:
            if d.option in ("output", "error", "input") and d.from_script and d.value:
                problem = _path_problem(d, limits, limits.job_root)
                if problem:
                    problems.append(problem)
    return problems


def _time_problems(request: EffectiveRequest, limits: Limits, problems: list[Problem], line_of) -> None:
    limit = request.time_limit_minutes
    time_d = request.winning.get("time")
    if limit == INFINITE and time_d is not None and time_d.from_script:
        problems.append(
            Problem(
                time_d.line,
                f"`{time_d.text}` means no time limit at all to Slurm; give a wall time"
                + (f" of at most {limits.max_time_minutes} minutes." if limits.max_time_minutes else "."),
            )
        )
    elif limit is not None and limits.max_time_minutes is not None and limit > limits.max_time_minutes:
        shown = "unlimited" if limit == INFINITE else f"{int(limit)} minutes"
        why = "" if time_d is not None else " (the partition's default, as the script gives no --time)"
        problems.append(
            Problem(
                line_of("time"),
                f"This job asks for {shown} of wall time{why}, more than your grant's limit of "
                f"{limits.max_time_minutes} minutes.",
            )
        )
    tmin = request.time_min_minutes
    if tmin is not None and limit is not None and tmin > limit:
        problems.append(
            Problem(
                line_of("time-min"),
                f"--time-min asks for {int(tmin)} minutes, more than the job's time limit of "
                f"{'unlimited' if limit == INFINITE else int(limit)} minutes.",
            )
        )
