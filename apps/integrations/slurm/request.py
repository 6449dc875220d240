"""The request a script makes once Slurm has resolved it: the hub's command-line options
over the script's directives, then the cluster's own defaults (partition, DefaultTime,
DefMemPerCPU, exclusivity, MaxMemPerCPU). Pure functions, no I/O.

What Slurm 22.05 does, checked against the local cluster (held jobs' `scontrol show job`,
`sbatch --test-only`):

* no ``-p``: the partition marked Default;
* no ``--time`` (``--time-min`` alone included): the partition's DefaultTime, else its
  MaxTime; ``--time=0`` is UNLIMITED;
* ``--exclusive`` (or a partition with OverSubscribe=EXCLUSIVE) allocates every CPU of the
  node, and ``--mincpus=N`` at least N CPUs per node, whatever the task count says;
* memory per CPU is multiplied by the CPUs allocated; no memory option gives the
  partition's DefMemPerCPU/DefMemPerNode, else the cluster's;
* a ``--mem-per-cpu`` above MaxMemPerCPU raises the CPUs per task until it fits.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .base import PartitionInfo
from .sbatch import (
    INFINITE,
    MAX_PROBLEMS,
    MEM_HELP,
    STOPPED,
    TIME_HELP,
    Directive,
    Problem,
    parse_array,
    parse_command_line,
    parse_gpu_count,
    parse_gres_gpus,
    parse_memory_mb,
    parse_node_count,
    parse_script,
    parse_time_minutes,
    positive_int,
)


@dataclass
class EffectiveRequest:
    """What the job asks Slurm for, once the hub's command-line options are applied over
    the script's directives. None means "not asked; Slurm's default applies"."""

    directives: list[Directive] = field(default_factory=list)
    # The directive that won for each option, for line numbers in problems.
    winning: dict[str, Directive] = field(default_factory=dict)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    job_name: str | None = None
    nodes_min: int | None = None
    nodes_max: int | None = None
    ntasks: int = 1
    ntasks_set: bool = False
    ntasks_per_node: int | None = None
    cpus_per_task: int = 1
    mincpus: int | None = None
    mem_per_node_mb: int | None = None
    mem_per_cpu_mb: int | None = None
    mem_per_gpu_mb: int | None = None
    gpus: int = 0
    time_limit_minutes: float | None = None  # math.inf for UNLIMITED
    time_min_minutes: float | None = None
    array: str | None = None
    array_task_count: int | None = None
    array_max_index: int | None = None
    array_throttle: int | None = None
    output: str | None = None
    error: str | None = None
    input: str | None = None
    dependency: str | None = None
    export: str | None = None
    hold: bool = False
    exclusive: bool = False
    # Filled from the cluster's configuration by `apply_cluster`.
    partition_is_default: bool = False
    node_cpus: int | None = None  # CPUs of a whole node, when the job gets whole nodes
    partition_gpus: int | None = None  # GPUs in the partitions it may run in; None: unknown
    default_mem_per_cpu_mb: int | None = None
    default_mem_per_node_mb: int | None = None

    @property
    def nodes(self) -> int:
        """Nodes the job needs at least (Slurm's NumNodes lower bound)."""
        return self.nodes_min or 1

    @property
    def total_cpus(self) -> int:
        """CPUs Slurm allocates: tasks x CPUs per task, at least `--mincpus` per node and
        one per node, every CPU of the node when the job has nodes to itself."""
        cpus = max(self.ntasks * self.cpus_per_task, self.nodes)
        if self.mincpus:
            cpus = max(cpus, self.mincpus * self.nodes)
        if self.node_cpus:
            cpus = max(cpus, self.node_cpus * self.nodes)
        return cpus

    @property
    def total_memory_mb(self) -> int | None:
        """Memory for the whole job, whichever way it was asked or defaulted (0 = whole
        nodes); None when neither the script nor the known configuration says."""
        if self.mem_per_node_mb is not None:
            return self.mem_per_node_mb * self.nodes
        if self.mem_per_cpu_mb is not None:
            return self.mem_per_cpu_mb * self.total_cpus
        if self.mem_per_gpu_mb is not None:
            return self.mem_per_gpu_mb * self.gpus
        if self.default_mem_per_cpu_mb is not None:
            return self.default_mem_per_cpu_mb * self.total_cpus
        if self.default_mem_per_node_mb is not None:
            return self.default_mem_per_node_mb * self.nodes
        return None

    @property
    def asks_memory(self) -> bool:
        return any(v is not None for v in (self.mem_per_node_mb, self.mem_per_cpu_mb, self.mem_per_gpu_mb))

    def as_dict(self) -> dict[str, object]:
        """Plain values for an API response."""
        return {
            "partition": self.partition,
            "account": self.account,
            "qos": self.qos,
            "job_name": self.job_name,
            "nodes": self.nodes,
            "nodes_max": self.nodes_max,
            "ntasks": self.ntasks,
            "cpus_per_task": self.cpus_per_task,
            "total_cpus": self.total_cpus,
            "exclusive": self.exclusive,
            "mem_per_node_mb": self.mem_per_node_mb,
            "mem_per_cpu_mb": self.mem_per_cpu_mb,
            "total_memory_mb": self.total_memory_mb,
            "gpus": self.gpus,
            "time_limit_minutes": (
                None
                if self.time_limit_minutes is None
                else ("UNLIMITED" if self.time_limit_minutes == INFINITE else int(self.time_limit_minutes))
            ),
            "array": self.array,
            "array_task_count": self.array_task_count,
            "array_max_index": self.array_max_index,
            "output": self.output,
            "error": self.error,
            "dependency": self.dependency,
            "hold": self.hold,
        }


def resolve(directives: Sequence[Directive], problems: list[Problem] | None = None) -> EffectiveRequest:
    """Apply directives in order (later wins, like sbatch) and interpret the values that
    matter for policy. Unreadable values are appended to `problems`."""
    problems = problems if problems is not None else []
    req = EffectiveRequest(directives=list(directives))
    # sbatch resets the other memory options when one is given on the command line; in
    # one source they are mutually exclusive. Track the source of each.
    mem_sources: dict[str, Directive] = {}

    def bad(d: Directive, what: str) -> None:
        # As many problems as the parser reports at most: a script repeating one bad line
        # would otherwise get a sentence for every repetition.
        if len(problems) < MAX_PROBLEMS:
            problems.append(Problem(d.line, f"`{d.text}`: {what}."))
        elif not problems[-1].message.startswith(STOPPED):
            problems.append(Problem(d.line, f"{STOPPED} here."))

    for d in directives:
        req.winning[d.option] = d
        v = d.value or ""
        o = d.option
        if o == "partition":
            req.partition = v
        elif o == "account":
            req.account = v
        elif o == "qos":
            req.qos = v
        elif o == "job-name":
            req.job_name = v
        elif o == "nodes":
            nodes = parse_node_count(v)
            if nodes is None:
                bad(d, "the number of nodes must be a whole number or a range like 2-4")
            else:
                req.nodes_min, req.nodes_max = nodes
        elif o in ("ntasks", "ntasks-per-node", "cpus-per-task", "mincpus"):
            n = positive_int(v)
            if n is None:
                bad(d, f"--{o} must be a whole number of at least 1")
            elif o == "ntasks":
                req.ntasks, req.ntasks_set = n, True
            elif o == "ntasks-per-node":
                req.ntasks_per_node = n
            elif o == "cpus-per-task":
                req.cpus_per_task = n
            else:
                req.mincpus = n
        elif o in ("mem", "mem-per-cpu", "mem-per-gpu"):
            mb = parse_memory_mb(v)
            if mb is None:
                bad(d, f"'{v}' is not an amount of memory; {MEM_HELP}")
                continue
            for other in ("mem", "mem-per-cpu", "mem-per-gpu"):
                prev = mem_sources.get(other)
                if other != o and prev is not None and prev.from_script == d.from_script:
                    bad(d, f"--{o} cannot be combined with --{other} (line {prev.line}); keep one")
            if d.from_script is False:
                # the command line wins over any memory option of the script
                req.mem_per_node_mb = req.mem_per_cpu_mb = req.mem_per_gpu_mb = None
            mem_sources[o] = d
            if o == "mem":
                req.mem_per_node_mb = mb
            elif o == "mem-per-cpu":
                req.mem_per_cpu_mb = mb
            else:
                req.mem_per_gpu_mb = mb
        elif o in ("time", "time-min"):
            minutes = parse_time_minutes(v)
            if minutes is None:
                bad(d, f"'{v}' is not a time limit; {TIME_HELP}")
            elif o == "time":
                # Slurm reads a limit of 0 as no limit at all
                req.time_limit_minutes = INFINITE if minutes == 0 else minutes
            else:
                req.time_min_minutes = minutes
        elif o in ("gpus", "gpus-per-node", "gpus-per-task", "gres"):
            parser = parse_gres_gpus if o == "gres" else parse_gpu_count
            if parser(v) is None:
                bad(d, f"'{v}' is not a GPU request; write e.g. gpu:2 or a100:2")
        elif o in ("output", "error", "input", "dependency", "export"):
            setattr(req, o, v)
        elif o == "hold":
            req.hold = True
        elif o == "exclusive":
            req.exclusive = True

    # sbatch keeps only the last --array; its indexes are counted once, from that one.
    if "array" in req.winning:
        d = req.winning["array"]
        spec = parse_array(d.value or "")
        if spec is None:
            bad(
                d,
                f"'{d.value}' is not an array range Slurm accepts; write e.g. 0-9, 1,3,5, 0-20:5 "
                "or 0-99%10 to run at most 10 at a time (no index above 4000000)",
            )
        else:
            req.array = d.value
            req.array_task_count = spec.count
            req.array_max_index = spec.max_index
            req.array_throttle = spec.throttle

    # sbatch's _opt_verify: tasks per node times nodes, when no task count was given.
    if not req.ntasks_set and req.ntasks_per_node:
        req.ntasks = req.nodes * req.ntasks_per_node
    req.gpus = _total_gpus(req)
    return req


def _total_gpus(req: EffectiveRequest) -> int:
    w = req.winning
    if "gpus" in w:
        return parse_gpu_count(w["gpus"].value or "") or 0
    if "gpus-per-node" in w:
        return (parse_gpu_count(w["gpus-per-node"].value or "") or 0) * req.nodes
    if "gres" in w:
        return (parse_gres_gpus(w["gres"].value or "") or 0) * req.nodes
    if "gpus-per-task" in w:
        return (parse_gpu_count(w["gpus-per-task"].value or "") or 0) * req.ntasks
    return 0


@functools.lru_cache(maxsize=4)
def _parsed(script: str) -> tuple[tuple[Directive, ...], tuple[Problem, ...]]:
    # Validation resolves a script twice (alone, then with the hub's options): read it once.
    directives, problems = parse_script(script)
    return tuple(directives), tuple(problems)


def effective_request(
    script: str, hub_args: Sequence[str] = (), partitions: Sequence[PartitionInfo] | None = None
) -> tuple[EffectiveRequest, list[Problem]]:
    """Parse `script`, apply the hub's command-line options on top, and resolve; with the
    cluster's `partitions`, apply its defaults too."""
    directives, problems = _parsed(script)
    directives, problems = list(directives), list(problems)
    cli, cli_problems = parse_command_line(hub_args)
    problems.extend(cli_problems)
    req = resolve([*directives, *cli], problems)
    if partitions is not None:
        apply_cluster(req, partitions)
    return req, problems


# ---------------------------------------------------------------- the cluster's defaults


def partitions_from_state(state: dict | None) -> list[PartitionInfo] | None:
    """The partitions of a cluster's cached health (`Cluster.state`); None if never read,
    or read before the hub knew every field (a state cached by an older version lacks the
    defaults: resolving without them would let a script skip them)."""
    if not state or not state.get("partitions"):
        return None
    known = set(PartitionInfo.__dataclass_fields__)
    if any(not isinstance(p, dict) or not known <= set(p) for p in state["partitions"]):
        return None
    return [PartitionInfo(**{k: v for k, v in p.items() if k in known}) for p in state["partitions"]]


def unknown_partitions(req: EffectiveRequest, partitions: Sequence[PartitionInfo]) -> list[str]:
    """The partitions the request names that the cluster's configuration does not list
    ('(default)' when it names none and no partition is the default)."""
    if not req.partition:
        return [] if any(p.is_default for p in partitions) else ["(default)"]
    names = {p.name for p in partitions}
    return [name for name in req.partition.split(",") if name and name not in names]


def chosen_partitions(req: EffectiveRequest, partitions: Sequence[PartitionInfo]) -> list[PartitionInfo]:
    """The partitions the job may run in: those it names, or the cluster's default."""
    if req.partition:
        names = [p for p in req.partition.split(",") if p]
        return [p for p in partitions if p.name in names]
    return [p for p in partitions if p.is_default][:1]


def default_time_minutes(partition: PartitionInfo) -> int | None:
    """What Slurm gives a job without --time there: DefaultTime, else MaxTime."""
    return (
        partition.default_time_minutes if partition.default_time_minutes is not None else partition.time_limit_minutes
    )


def apply_cluster(req: EffectiveRequest, partitions: Sequence[PartitionInfo]) -> None:
    """Fill in what Slurm decides from its configuration. With several partitions named,
    the one that costs most counts: Slurm picks among them when the job is scheduled."""
    chosen = chosen_partitions(req, partitions)
    if not chosen:
        return
    if not req.partition:
        req.partition = chosen[0].name
        req.partition_is_default = True
    worst: tuple[int, int, EffectiveRequest] | None = None
    for part in chosen:
        trial = EffectiveRequest(**{**req.__dict__})
        _apply_partition(trial, part)
        cost = (trial.total_cpus, trial.total_memory_mb or 0, trial)
        if worst is None or cost[:2] > worst[:2]:
            worst = cost
    assert worst is not None
    picked = worst[2]
    for name in ("node_cpus", "cpus_per_task", "mem_per_cpu_mb", "default_mem_per_cpu_mb", "default_mem_per_node_mb"):
        setattr(req, name, getattr(picked, name))
    req.partition_gpus = max(p.total_gpus for p in chosen)
    if req.time_limit_minutes is None:
        defaults = [default_time_minutes(p) for p in chosen]
        req.time_limit_minutes = INFINITE if None in defaults else max(d for d in defaults if d is not None)


def _apply_partition(req: EffectiveRequest, part: PartitionInfo) -> None:
    if req.exclusive or part.oversubscribe.upper().startswith("EXCLUSIVE"):
        req.node_cpus = part.node_cpus or None
    if req.mem_per_cpu_mb and part.max_mem_per_cpu_mb and req.mem_per_cpu_mb > part.max_mem_per_cpu_mb:
        # Slurm raises the CPUs per task until each CPU's share fits MaxMemPerCPU.
        factor = math.ceil(req.mem_per_cpu_mb / part.max_mem_per_cpu_mb)
        req.cpus_per_task *= factor
        req.mem_per_cpu_mb = math.ceil(req.mem_per_cpu_mb / factor)
    if not req.asks_memory and part.memory_defaults_known:
        req.default_mem_per_cpu_mb = part.def_mem_per_cpu_mb
        req.default_mem_per_node_mb = part.def_mem_per_node_mb
        if part.def_mem_per_cpu_mb is None and part.def_mem_per_node_mb is None:
            # no default anywhere: Slurm gives the job all the memory of its nodes
            req.default_mem_per_node_mb = part.node_memory_mb or None


def hub_defaults(req: EffectiveRequest, *, max_time_minutes: int | None, max_mem_mb: int | None) -> list[str]:
    """Explicit sbatch options for what the script (resolved with `apply_cluster`) leaves
    to Slurm, so that Slurm runs what the hub recorded and checked: the default partition
    by name, a wall time within the grant (the partition's default when smaller), and
    memory within the grant when the cluster's default is not known (slurmrestd does not
    show cluster-wide defaults)."""
    args: list[str] = []
    if req.partition_is_default and req.partition:
        args.append(f"--partition={req.partition}")
    if "time" not in req.winning:
        bounds = [t for t in (req.time_limit_minutes, max_time_minutes) if t is not None and t != INFINITE]
        if bounds:
            args.append(f"--time={int(min(bounds))}")
    if max_mem_mb and not req.asks_memory and req.total_memory_mb is None:
        args.append(f"--mem={max_mem_mb // max(req.nodes_max or req.nodes, 1)}M")
    return args
