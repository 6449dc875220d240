"""The effective request is what Slurm resolves, defaults included, and the grant is
checked against that (issue 9, findings 1, 4, 5, 6 and control characters)."""

from __future__ import annotations

import math
import time

import pytest

from apps.integrations.slurm.base import ClusterState, NodeInfo, PartitionInfo
from apps.integrations.slurm.config import apply_partition_config, parse_config, rest_partition_config
from apps.integrations.slurm.policy import Limits, check_against_limits, expand_filename
from apps.integrations.slurm.request import effective_request, hub_defaults
from apps.integrations.slurm.sbatch import parse_array, parse_script


def local_partitions(**changes) -> list[PartitionInfo]:
    """The local cluster as scontrol describes it: debug (default, MaxTime 1 h) and batch,
    one node of 2 CPUs and 22900 MB, DefMemPerCPU=1024 cluster-wide."""
    common = dict(
        nodes=["vm"],
        node_cpus=2,
        node_memory_mb=22900,
        def_mem_per_cpu_mb=1024,
        memory_defaults_known=True,
    )
    debug = PartitionInfo(name="debug", is_default=True, time_limit_minutes=60, **{**common, **changes})
    batch = PartitionInfo(name="batch", time_limit_minutes=1440, **common)
    return [debug, batch]


# The grant of the issue: partition debug, 1 CPU, 2048 MB, 10 minutes.
GRANT = dict(max_time_minutes=10, max_mem_mb=2048)
LIMITS = Limits(
    allowed_partitions=frozenset({"debug"}),
    max_cpus=1,
    max_mem_mb=2048,
    max_time_minutes=10,
    job_root="/scratch/alice/jobs",
    workdir="/scratch/alice/jobs/42",
    job_name="job",
    username="alice",
)


def checked(script: str, limits: Limits = LIMITS, partitions=None):
    """Resolve as the hub does: the script alone, then with the hub's defaults on top."""
    partitions = local_partitions() if partitions is None else partitions
    alone, _ = effective_request(script, partitions=partitions)
    args = hub_defaults(alone, **GRANT)
    req, problems = effective_request(script, args, partitions)
    return req, args, problems + check_against_limits(req, limits)


# ------------------------------------------------------------------ finding 1: defaults


def test_a_script_without_time_gets_an_explicit_time_within_the_grant() -> None:
    req, args, problems = checked("#!/bin/bash\nhostname\n")
    assert "--time=10" in args
    assert req.time_limit_minutes == 10
    assert problems == []


def test_the_partition_default_time_is_used_when_smaller_than_the_grant() -> None:
    alone, _ = effective_request("#!/bin/bash\n", partitions=local_partitions(default_time_minutes=5))
    assert "--time=5" in hub_defaults(alone, max_time_minutes=10, max_mem_mb=None)


def test_time_min_alone_counts_as_no_time() -> None:
    req, args, problems = checked("#!/bin/bash\n#SBATCH --time-min=5\n")
    assert "--time=10" in args and req.time_limit_minutes == 10 and problems == []


def test_time_min_above_the_time_limit_is_refused() -> None:
    _, _, problems = checked("#!/bin/bash\n#SBATCH --time-min=30\n")
    assert [p.line for p in problems] == [2]
    assert "--time-min" in problems[0].message


@pytest.mark.parametrize("value", ["0", "UNLIMITED", "INFINITE", "-1", "00:00"])
def test_it_refuses_a_time_that_means_no_limit(value: str) -> None:
    _, _, problems = checked(f"#!/bin/bash\n#SBATCH --time={value}\n")
    assert [p.line for p in problems] == [2]
    assert "no time limit" in problems[0].message


def test_it_refuses_no_limit_even_when_the_grant_has_no_time_limit() -> None:
    req, _ = effective_request("#SBATCH -t 0\n", partitions=local_partitions())
    assert req.time_limit_minutes == math.inf
    [problem] = check_against_limits(req, Limits())
    assert "no time limit" in problem.message


@pytest.mark.parametrize("option", ["--help", "--usage", "--version", "-V", "-h", "--test-only"])
def test_it_refuses_informational_options_with_their_line(option: str) -> None:
    _, _, problems = checked(f"#!/bin/bash\n#SBATCH -t 5\n#SBATCH {option}\n")
    assert [p.line for p in problems] == [3]
    assert "not allowed" in problems[0].message


def test_a_script_without_partition_records_the_default_partition() -> None:
    req, args, problems = checked("#!/bin/bash\n#SBATCH -t 5\n")
    assert req.partition == "debug" and "--partition=debug" in args and problems == []


def test_exclusive_counts_every_cpu_of_the_node_and_memory_per_cpu_on_them() -> None:
    req, _, problems = checked("#!/bin/bash\n#SBATCH -t 5 --exclusive --mem-per-cpu=2000\n")
    assert (req.total_cpus, req.total_memory_mb) == (2, 4000)
    messages = " ".join(p.message for p in problems)
    assert "2 CPUs" in messages and "4000 MB" in messages
    assert all(p.line == 2 for p in problems)


def test_mincpus_counts_its_cpus_per_node() -> None:
    req, _, problems = checked("#!/bin/bash\n#SBATCH -t 5 --mincpus=2 --mem-per-cpu=2000\n")
    assert (req.total_cpus, req.total_memory_mb) == (2, 4000)
    assert len(problems) == 2


def test_an_exclusive_partition_gives_whole_nodes_to_every_job() -> None:
    req, _, problems = checked("#!/bin/bash\n#SBATCH -t 5\n", partitions=local_partitions(oversubscribe="EXCLUSIVE"))
    assert (req.total_cpus, req.total_memory_mb) == (2, 2048)
    assert any("2 CPUs" in p.message for p in problems)


def test_no_memory_option_gets_the_clusters_default_per_cpu() -> None:
    req, args, problems = checked("#!/bin/bash\n#SBATCH -t 5 -n 2\n")
    assert req.total_memory_mb == 2048 and not any(a.startswith("--mem") for a in args)
    assert [p.message for p in problems if "MB" in p.message] == []


def test_no_memory_default_anywhere_means_the_whole_node() -> None:
    req, _, problems = checked("#!/bin/bash\n#SBATCH -t 5\n", partitions=local_partitions(def_mem_per_cpu_mb=None))
    assert req.total_memory_mb == 22900
    assert any("22900 MB" in p.message for p in problems)


def test_an_unknown_memory_default_gets_explicit_memory_within_the_grant() -> None:
    req, args, problems = checked(
        "#!/bin/bash\n#SBATCH -t 5\n", partitions=local_partitions(memory_defaults_known=False)
    )
    assert "--mem=2048M" in args and req.total_memory_mb == 2048 and problems == []


def test_memory_per_cpu_above_max_mem_per_cpu_raises_the_cpus_like_slurm() -> None:
    req, _, problems = checked(
        "#!/bin/bash\n#SBATCH -t 5 --mem-per-cpu=2000\n", partitions=local_partitions(max_mem_per_cpu_mb=1000)
    )
    assert (req.cpus_per_task, req.mem_per_cpu_mb, req.total_cpus) == (2, 1000, 2)
    assert any("2 CPUs" in p.message for p in problems)


def test_a_list_of_partitions_is_resolved_with_the_costliest() -> None:
    parts = local_partitions()
    parts[1].def_mem_per_cpu_mb = 4096
    req, _ = effective_request("#SBATCH -p debug,batch\n", partitions=parts)
    assert req.total_memory_mb == 4096


# ------------------------------------------------------------------ finding 4: filename patterns


def test_it_expands_the_job_name_before_checking_the_job_folder() -> None:
    limits = Limits(job_root="/scratch/alice/jobs", workdir="/scratch/alice/jobs/42", job_name="../../etc/hostname")
    req, _ = effective_request("#!/bin/bash\n#SBATCH --input=/scratch/alice/jobs/%x\n")
    [problem] = check_against_limits(req, limits)
    assert problem.line == 2
    assert "/scratch/etc/hostname" in problem.message and "%x" in problem.message


@pytest.mark.parametrize(
    ("path", "expanded"),
    [
        ("logs/%x-%j.out", "logs/train-0.out"),
        ("%u/%A_%a.%3t", "alice/0_0.0"),
        ("100%%.log", "100%.log"),
        ("a\\%x", "a%x"),  # a backslash turns patterns off
        ("%N-%n-%s-%J", "node-0-0-0"),
    ],
)
def test_it_expands_slurms_filename_patterns(path: str, expanded: str) -> None:
    assert expand_filename(path, job_name="train", username="alice") == expanded


def test_it_refuses_a_pattern_slurm_does_not_document() -> None:
    found = check_against_limits(effective_request("#SBATCH -o out-%q.log\n")[0], LIMITS)
    assert "%q" in found[0].message


# ------------------------------------------------------------------ finding 5: bounded parsing


def test_a_huge_array_is_counted_without_building_it() -> None:
    started = time.perf_counter()
    spec = parse_array("0-3999999")
    assert spec is not None and spec.count == 4_000_000
    assert time.perf_counter() - started < 0.05


def test_overlapping_array_ranges_count_once() -> None:
    spec = parse_array("0-9,5-14:3,2")
    assert spec is not None and (spec.count, spec.max_index) == (12, 14)


@pytest.mark.parametrize("text", ["0-999999999", "4000001", "0-99999999999999999999"])
def test_an_array_index_slurm_never_accepts_is_refused(text: str) -> None:
    assert parse_array(text) is None


def test_only_the_last_array_line_counts_like_sbatch() -> None:
    req, problems = effective_request("#SBATCH --array=0-999999999\n" * 50 + "#SBATCH --array=0-3\n")
    assert problems == [] and req.array_task_count == 4


# ------------------------------------------------------------------ finding 6: REST


@pytest.mark.parametrize("directive", ["--export=ALL", "--container=/c", "--bbf=b", "--nodefile=n", "--signal=B:USR1"])
def test_options_slurmrestd_cannot_take_are_refused_at_validation_for_rest(directive: str) -> None:
    req, _ = effective_request(f"#!/bin/bash\n#SBATCH {directive}\n")
    [problem] = check_against_limits(req, Limits(rest=True))
    assert problem.line == 2 and "slurmrestd" in problem.message


def test_the_same_options_are_fine_over_ssh() -> None:
    req, _ = effective_request("#!/bin/bash\n#SBATCH --export=ALL --signal=B:USR1\n")
    assert check_against_limits(req, Limits()) == []


# ------------------------------------------------------------------ control characters


@pytest.mark.parametrize("value", ["a\x1bb", "a\x07b", "x\x7f"])
def test_a_directive_value_with_a_control_character_is_refused(value: str) -> None:
    req, _ = effective_request(f"#SBATCH --comment={value}\n")
    [problem] = check_against_limits(req, Limits())
    assert "control character" in problem.message


# ------------------------------------------------------------------ reading the configuration

SCONTROL_PARTITIONS = (
    "PartitionName=debug AllowGroups=ALL Default=YES QoS=N/A DefaultTime=00:20:00 MaxNodes=UNLIMITED "
    "MaxTime=01:00:00 Nodes=vm OverSubscribe=EXCLUSIVE State=UP TotalCPUs=2 TotalNodes=1 "
    "JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerCPU=3000 TRES=cpu=2,mem=22900M,node=1,billing=2\n"
    "PartitionName=batch Default=NO DefaultTime=NONE MaxTime=1-00:00:00 Nodes=vm OverSubscribe=NO "
    "State=UP DefMemPerCPU=512 MaxMemPerNode=UNLIMITED\n"
)
SCONTROL_CONFIG = (
    "Configuration data as of 2026-11-30T01:00:00\nDefMemPerCPU            = 1024\nMaxMemPerNode = UNLIMITED\n"
)


def test_it_reads_partition_defaults_with_the_clusters_as_fallback() -> None:
    state = ClusterState(
        partitions=[PartitionInfo(name="debug", nodes=["vm"]), PartitionInfo(name="batch", nodes=["vm"])],
        nodes=[NodeInfo(name="vm", state="IDLE", cpus=2, memory_mb=22900)],
    )
    apply_partition_config(state, SCONTROL_PARTITIONS, parse_config(SCONTROL_CONFIG))
    debug, batch = state.partitions
    assert (debug.is_default, debug.default_time_minutes, debug.time_limit_minutes) == (True, 20, 60)
    assert (debug.oversubscribe, debug.def_mem_per_cpu_mb, debug.max_mem_per_cpu_mb) == ("EXCLUSIVE", 1024, 3000)
    assert (batch.default_time_minutes, batch.time_limit_minutes, batch.def_mem_per_cpu_mb) == (None, 1440, 512)
    assert (debug.node_cpus, debug.node_memory_mb, debug.memory_defaults_known) == (2, 22900, True)


def test_rest_partitions_know_memory_defaults_only_when_the_partition_sets_them() -> None:
    part = PartitionInfo(name="debug")
    rest_partition_config(part, {"default_time_limit": None, "default_memory_per_cpu": None})
    assert (part.default_time_minutes, part.memory_defaults_known) == (None, False)
    rest_partition_config(part, {"default_time_limit": 15, "default_memory_per_cpu": 900})
    assert (part.default_time_minutes, part.def_mem_per_cpu_mb, part.memory_defaults_known) == (15, 900, True)


def test_directives_beyond_the_bound_are_refused_with_a_sentence() -> None:
    script = "#!/bin/bash\n" + "#SBATCH -N1 -n1 -c1\n" * 2000 + "hostname\n"
    directives, problems = parse_script(script)
    assert problems and "16 KiB" in problems[-1].message
    assert len(directives) < 3000


def test_reading_stops_after_fifty_problems() -> None:
    _, problems = parse_script("#SBATCH " + "--zzz " * 500 + "\n")
    assert len(problems) == 51 and "stopped reading" in problems[-1].message


def test_overlapping_ranges_with_too_many_indexes_are_refused() -> None:
    assert parse_array("0-3999999,1-3999999:2") is None


@pytest.mark.parametrize("option", ["mem", "mem-per-cpu", "mem-per-gpu"])
def test_a_memory_of_zero_in_any_form_is_refused_as_the_whole_node(option: str) -> None:
    _, _, problems = checked(f"#!/bin/bash\n#SBATCH -t 5\n#SBATCH --{option}=0\nhostname\n")
    refused = [p.line for p in problems if p.message.startswith(f"--{option}=0 asks for all the memory")]
    assert refused == [3]


def test_resolving_stops_after_fifty_problems_too() -> None:
    script = "#!/bin/bash\n" + "#SBATCH --mem=1G --mem-per-cpu=1 --mem-per-gpu=1\n" * 300
    _, problems = effective_request(script)
    assert len(problems) == 51 and "stopped reading" in problems[-1].message
