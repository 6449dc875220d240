"""The defaults Slurm applies to a job that does not say, read from the cluster's own
configuration: `scontrol show partition --oneliner` for each partition's DefaultTime,
MaxTime, memory defaults and OverSubscribe, and the cluster-wide DefMemPerCPU and friends
from `scontrol show config`, which a partition inherits when it sets none. Pure functions.
"""

from __future__ import annotations

import re

from .base import ClusterState, PartitionInfo
from .parsing import parse_minutes, parse_scontrol_oneliner

PARTITIONS_ARGS = ["scontrol", "show", "partition", "--oneliner"]
CONFIG_ARGS = ["scontrol", "show", "config"]
MEMORY_KEYS = ("DefMemPerCPU", "DefMemPerNode", "MaxMemPerCPU", "MaxMemPerNode")
_CONFIG_LINE = re.compile(r"^(\w+)\s*=\s*(.*?)\s*$")


def _mb(text: str | None) -> int | None:
    """A memory setting in MB; None for UNLIMITED, 0 or missing (no such setting)."""
    if not text:
        return None
    m = re.fullmatch(r"(\d+)([MGT]?)", text.strip())
    if not m or int(m.group(1)) == 0:
        return None
    return int(m.group(1)) * {"": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2)]


def _minutes(text: str | None) -> int | None:
    if not text or text.upper() in ("NONE", "UNLIMITED", "INFINITE", "N/A"):
        return None
    return parse_minutes(text)


def parse_config(output: str) -> dict[str, str]:
    """`scontrol show config`: 'Key = value' lines, the memory keys only."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        m = _CONFIG_LINE.match(line)
        if m and m.group(1) in MEMORY_KEYS:
            found[m.group(1)] = m.group(2)
    return found


def apply_partition_config(state: ClusterState, partitions_output: str, config: dict[str, str]) -> ClusterState:
    """Fill each partition of `state` (from sinfo) with its configured defaults."""
    by_name = {p.name: p for p in state.partitions}
    for line in partitions_output.splitlines():
        if not line.strip().startswith("PartitionName="):
            continue
        fields = parse_scontrol_oneliner(line.strip()).fields
        part = by_name.get(fields.get("PartitionName", ""))
        if part is None:
            continue
        part.default_time_minutes = _minutes(fields.get("DefaultTime"))
        part.time_limit_minutes = _minutes(fields.get("MaxTime"))
        part.oversubscribe = fields.get("OverSubscribe", "NO").upper()
        part.is_default = fields.get("Default", "NO").upper() == "YES"
        # A partition's own memory setting wins over the cluster-wide one; per CPU and per
        # node exclude each other, so the partition's pair replaces the cluster's pair.
        own_def = (_mb(fields.get("DefMemPerCPU")), _mb(fields.get("DefMemPerNode")))
        if own_def == (None, None):
            own_def = (_mb(config.get("DefMemPerCPU")), _mb(config.get("DefMemPerNode")))
        own_max = (_mb(fields.get("MaxMemPerCPU")), _mb(fields.get("MaxMemPerNode")))
        if own_max == (None, None):
            own_max = (_mb(config.get("MaxMemPerCPU")), _mb(config.get("MaxMemPerNode")))
        part.def_mem_per_cpu_mb, part.def_mem_per_node_mb = own_def
        part.max_mem_per_cpu_mb, part.max_mem_per_node_mb = own_max
        part.memory_defaults_known = True
    fill_node_sizes(state)
    return state


def fill_node_sizes(state: ClusterState) -> None:
    """Each partition's largest node: what a job with whole nodes gets per node."""
    nodes = {n.name: n for n in state.nodes}
    for part in state.partitions:
        members = [nodes[name] for name in part.nodes if name in nodes]
        part.node_cpus = max((n.cpus for n in members), default=0)
        part.node_memory_mb = max((n.memory_mb for n in members), default=0)


def rest_partition_config(part: PartitionInfo, raw: dict) -> None:
    """The same from slurmrestd v0.0.38's partition object. It shows the partition's own
    memory settings only (null when it inherits the cluster's, which no v0.0.38 endpoint
    shows) and not OverSubscribe, so the memory defaults are known only when set here."""
    default_time = raw.get("default_time_limit")
    part.default_time_minutes = default_time if isinstance(default_time, int) and 0 <= default_time < 2**31 else None

    def mb(key: str) -> int | None:
        value = raw.get(key)
        return value if isinstance(value, int) and 0 < value < 2**62 else None

    part.def_mem_per_cpu_mb, part.def_mem_per_node_mb = mb("default_memory_per_cpu"), mb("default_memory_per_node")
    part.max_mem_per_cpu_mb, part.max_mem_per_node_mb = mb("maximum_memory_per_cpu"), mb("maximum_memory_per_node")
    part.memory_defaults_known = part.def_mem_per_cpu_mb is not None or part.def_mem_per_node_mb is not None
