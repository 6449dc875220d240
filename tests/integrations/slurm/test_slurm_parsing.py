"""Parsers for squeue, sacct, sinfo and scontrol output as the SSH transport asks for it.

The fixtures are output captured from Slurm 22.05.8 (the local cluster), with the
unit separator our format strings use shown as `|` for readability.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from apps.integrations.slurm.parsing import (
    DELIM,
    SACCT_FIELDS,
    SQUEUE_FIELDS,
    gpus_in_gres,
    parse_duration,
    parse_exit_code,
    parse_sacct,
    parse_sbatch_parsable,
    parse_scontrol_oneliner,
    parse_sinfo,
    parse_size_bytes,
    parse_squeue,
    parse_time,
    sacct_args,
    squeue_args,
)


def rows(text: str) -> str:
    return (
        "\n".join(
            line.strip().replace("|", DELIM) for line in text.strip().splitlines()
        )
        + "\n"
    )


# ------------------------------------------------------------------ scalars


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1-02:03:04", 93784),
        ("02:03:04", 7384),
        ("03:04", 184),
        ("0:00", 0),
        ("00:01.234", 1.234),
        ("01:02:03.500", 3723.5),
        ("2-00", 172800),
    ],
)
def test_it_reads_slurm_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["UNLIMITED", "INVALID", "N/A", "", "Partition_Limit"])
def test_durations_that_are_not_durations_are_none(text: str) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1234K", 1234 * 1024),
        ("12.50M", int(12.5 * 1024**2)),
        ("2G", 2 * 1024**3),
        ("0", 0),
    ],
)
def test_it_reads_memory_sizes_in_bytes(text: str, size: int) -> None:
    assert parse_size_bytes(text) == size


def test_unreadable_memory_is_none() -> None:
    assert parse_size_bytes("") is None


def test_it_reads_unix_timestamps_as_utc() -> None:
    assert parse_time("1700000000") == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


@pytest.mark.parametrize("text", ["N/A", "Unknown", "None", "0", ""])
def test_missing_times_are_none(text: str) -> None:
    assert parse_time(text) is None


def test_it_reads_iso_times_as_cluster_local_time() -> None:
    assert parse_time("2024-03-01T10:00:00") == datetime(2024, 3, 1, 10, 0, 0)


def test_it_splits_exit_code_and_signal() -> None:
    assert parse_exit_code("2:0") == (2, 0)
    assert parse_exit_code("0:15") == (0, 15)


@pytest.mark.parametrize(
    ("gres", "gpus"),
    [
        ("gpu:4", 4),
        ("gpu:a100:4(S:0-1)", 4),
        ("gpu:2,mps:100", 2),
        ("(null)", 0),
        ("", 0),
    ],
)
def test_it_counts_gpus_in_a_nodes_gres(gres: str, gpus: int) -> None:
    assert gpus_in_gres(gres) == gpus


def test_it_reads_the_job_id_from_sbatch_parsable() -> None:
    assert parse_sbatch_parsable("42\n") == "42"
    assert parse_sbatch_parsable("42;local\n") == "42"
    assert parse_sbatch_parsable("sbatch: warning: something\n43\n") == "43"
    assert parse_sbatch_parsable("") is None


# ------------------------------------------------------------------ command lines


def test_squeue_asks_for_one_user_with_array_tasks_expanded() -> None:
    args = squeue_args("scientist")
    assert args[:3] == ["squeue", "--noheader", "--array"]
    assert "--user=scientist" in args
    assert args[3].count(DELIM) == len(SQUEUE_FIELDS) - 1


def test_sacct_asks_for_every_job_in_one_call() -> None:
    args = sacct_args(["1", "2", "3"])
    assert "--jobs=1,2,3" in args
    assert f"--delimiter={DELIM}" in args and "--parsable2" in args


# ------------------------------------------------------------------ squeue

SQUEUE = rows(
    """
    12|12|N/A|train|axle:6f1c|RUNNING|None|scientist|vision|debug|1732860000|1732860005|1:05|1:00:00|vm|2|1|/scratch/scientist/jobs/1
    14|13|1|sweep|axle:77aa|RUNNING|None|scientist|vision|debug|1732860010|1732860011|0:03|10:00|vm|1|1|/scratch/scientist/jobs/2
    15|13|2|sweep|axle:77aa|PENDING|Resources|scientist|vision|debug|1732860010|1732863600|0:00|10:00||1|1|/scratch/scientist/jobs/2
    13|13|3-9%2|sweep|axle:77aa|PENDING|JobArrayTaskLimit|scientist|vision|debug|1732860010|N/A|0:00|10:00||1|1|/scratch/scientist/jobs/2
    16|16|N/A|held|(null)|PENDING|JobHeldUser|scientist|research|batch|1732860020|N/A|0:00|UNLIMITED||1|1|/scratch/scientist
    """
)


def test_it_reads_a_running_job_from_squeue() -> None:
    job = parse_squeue(SQUEUE)[0]
    assert job.job_id == "12"
    assert job.array_job_id is None and job.array_task_id is None
    assert (job.name, job.comment, job.state, job.reason) == (
        "train",
        "axle:6f1c",
        "RUNNING",
        "",
    )
    assert job.start_time == datetime.fromtimestamp(1732860005, tz=UTC)
    assert job.elapsed_seconds == 65
    assert job.time_limit_minutes == 60
    assert (job.node_list, job.alloc_cpus, job.num_nodes) == ("vm", 2, 1)


def test_it_reads_each_array_task_from_squeue() -> None:
    tasks = [j for j in parse_squeue(SQUEUE) if j.array_job_id == "13"]
    assert [(t.job_id, t.array_task_id) for t in tasks] == [
        ("14", "1"),
        ("15", "2"),
        ("13", "3-9%2"),
    ]
    assert tasks[1].reason == "Resources"
    assert tasks[1].start_time is not None  # Slurm's estimate for a pending job


def test_it_reads_a_held_job_without_comment_or_limit() -> None:
    job = parse_squeue(SQUEUE)[-1]
    assert (job.comment, job.reason, job.time_limit_minutes) == (
        "",
        "JobHeldUser",
        None,
    )
    assert job.start_time is None


def test_it_skips_lines_that_do_not_fit_the_format() -> None:
    assert parse_squeue("squeue: error: something\n") == []


def test_free_text_with_pipes_and_spaces_survives() -> None:
    line = DELIM.join(
        ["20", "20", "N/A", "a|b c", "x|y", "PENDING", "None", "u", "a", "p"]
        + ["0", "N/A", "0:00", "5:00", "", "1", "1", "/w"]
    )
    job = parse_squeue(line)[0]
    assert (job.name, job.comment) == ("a|b c", "x|y")


# ------------------------------------------------------------------ sacct

SACCT_HEADER = "|".join(SACCT_FIELDS)
SACCT = rows(
    """
    12|12|train|axle:6f1c|COMPLETED|None|scientist|vision|debug|1732860000|1732860005|1732860070|65|60|vm|0:0|00:02.345||2|billing=2,cpu=2,mem=2G,node=1|1|/scratch/scientist/jobs/1
    12.batch|12.batch|batch||COMPLETED||||||1732860005|1732860070|65||vm|0:0|00:02.300|2048K|2|cpu=2,mem=2G,node=1|1|
    12.extern|12.extern|extern||COMPLETED||||||1732860005|1732860070|65||vm|0:0|00:00.045|512K|2|billing=2,cpu=2,mem=2G,node=1|1|
    13_1|14|sweep||FAILED|None|scientist|vision|debug|1732860010|1732860011|1732860020|9|10|vm|3:0|00:00.100||1|billing=1,cpu=1,gres/gpu=1,mem=1G,node=1|1|/w
    13_1.batch|14.batch|batch||FAILED||||||1732860011|1732860020|9||vm|3:0|00:00.100|1.50M|1|cpu=1,mem=1G,node=1|1|
    13_[3-9%2]|13|sweep||PENDING|JobArrayTaskLimit|scientist|vision|debug|1732860010|Unknown|Unknown|0|10|None assigned|0:0|00:00:00||1||1|/w
    17|17|long||CANCELLED by 1000|None|scientist|vision|debug|1732860100|1732860101|1732860130|29|60|vm|0:15|00:00.010||1|billing=1,cpu=1,mem=1G,node=1|1|/w
    """
)


def test_it_folds_steps_into_their_job_and_keeps_the_peak_memory() -> None:
    job = parse_sacct(SACCT)[0]
    assert (job.job_id, job.state, job.exit_code, job.exit_signal) == (
        "12",
        "COMPLETED",
        0,
        0,
    )
    assert job.elapsed_seconds == 65
    assert job.cpu_time_seconds == pytest.approx(2.345)
    assert job.max_rss_bytes == 2048 * 1024
    assert (job.alloc_cpus, job.alloc_gpus, job.node_list) == (2, 0, "vm")
    assert job.end_time == datetime.fromtimestamp(1732860070, tz=UTC)


def test_it_reads_array_tasks_from_sacct() -> None:
    jobs = {j.job_id: j for j in parse_sacct(SACCT)}
    task = jobs["14"]
    assert (task.array_job_id, task.array_task_id, task.state, task.exit_code) == (
        "13",
        "1",
        "FAILED",
        3,
    )
    assert task.alloc_gpus == 1
    assert task.max_rss_bytes == int(1.5 * 1024**2)
    pending = jobs["13"]
    assert (pending.array_task_id, pending.node_list, pending.start_time) == (
        "3-9%2",
        "",
        None,
    )


def test_it_drops_who_cancelled_from_the_state() -> None:
    job = parse_sacct(SACCT)[-1]
    assert (job.state, job.exit_signal) == ("CANCELLED", 15)


def test_it_keeps_one_row_per_job_in_submission_order() -> None:
    assert [j.job_id for j in parse_sacct(SACCT)] == ["12", "14", "13", "17"]


# ------------------------------------------------------------------ sinfo

SINFO = rows(
    """
    vm|debug*|up|1:00:00|idle|2|0/2/0/2|22900|20000|(null)|none
    vm|batch|up|1-00:00:00|idle|2|0/2/0/2|22900|20000|(null)|none
    gpu1|gpu|up|infinite|mixed|64|16/48/0/64|512000|400000|gpu:a100:4(S:0-1)|none
    """
)


def test_it_folds_sinfo_rows_into_partitions_and_nodes() -> None:
    state = parse_sinfo(SINFO)
    assert [p.name for p in state.partitions] == ["debug", "batch", "gpu"]
    assert state.default_partition == "debug"
    debug = state.partition("debug")
    assert debug is not None
    assert (debug.time_limit_minutes, debug.total_cpus, debug.nodes) == (60, 2, ["vm"])
    assert state.partition("batch").time_limit_minutes == 1440  # type: ignore[union-attr]
    assert state.partition("gpu").time_limit_minutes is None  # type: ignore[union-attr]
    vm = state.nodes[0]
    assert (vm.name, vm.state, vm.cpus, vm.memory_mb, vm.partitions) == (
        "vm",
        "idle",
        2,
        22900,
        ["debug", "batch"],
    )
    gpu = state.nodes[1]
    assert (gpu.gpus, gpu.cpus_allocated) == (4, 16)


# ------------------------------------------------------------------ scontrol

SCONTROL = (
    "JobId=21 JobName=two words UserId=scientist(1001) GroupId=scientist(1001) MCS_label=N/A "
    "Priority=0 Nice=0 Account=vision QOS=normal JobState=PENDING Reason=JobHeldUser "
    "Dependency=(null) TimeLimit=00:30:00 NumNodes=1 NumCPUs=4 NumTasks=2 CPUs/Task=2 "
    "ReqB:S:C:T=0:0:*:* TRES=cpu=4,mem=4G,node=1,billing=4 MinMemoryNode=4G "
    "Comment=axle:x y StdOut=/scratch/scientist/slurm-21.out"
)


def test_it_reads_scontrol_one_liners_with_spaces_and_tres() -> None:
    job = parse_scontrol_oneliner(SCONTROL)
    assert job["JobName"] == "two words"
    assert job["NumCPUs"] == "4"
    assert job["CPUs/Task"] == "2"
    assert job["TRES"] == "cpu=4,mem=4G,node=1,billing=4"
    assert job["ReqB:S:C:T"] == "0:0:*:*"
    assert job["Comment"] == "axle:x y"
    assert job.get("Missing") is None
