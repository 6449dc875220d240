"""Parsers for squeue, sacct, sinfo and scontrol output as the SSH transport asks for it.

The fixtures in captured/ are real output of Slurm 22.05.8 on the local cluster,
produced by captured/capture.py with the parsers' own arguments and TIME_ENV (fields
separated by the delimiter saved in captured/delimiter, times in Unix seconds); see that
script for the scenario.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from apps.integrations.slurm.base import JobInfo
from apps.integrations.slurm.parsing import (
    SQUEUE_FIELDS,
    SqueueMemo,
    UnreadableOutput,
    _all_known,
    gpus_in_gres,
    new_delimiter,
    parse_duration,
    parse_exit_code,
    parse_minutes,
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


def captured(name: str) -> str:
    return (Path(__file__).parent / "captured" / name).read_text()


DELIM = captured("delimiter")


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
    delimiter = new_delimiter()
    args = squeue_args(delimiter, "scientist")
    assert args[:3] == ["squeue", "--noheader", "--array"]
    assert "--user=scientist" in args
    assert args[3].count(delimiter) == len(SQUEUE_FIELDS) - 1


def test_sacct_asks_for_every_job_in_one_call() -> None:
    delimiter = new_delimiter()
    args = sacct_args(delimiter, ["1", "2", "3"])
    assert "--jobs=1,2,3" in args
    assert f"--delimiter={delimiter}" in args and "--parsable2" in args


def test_each_call_draws_its_own_delimiter_that_nobody_could_have_typed() -> None:
    first, second = new_delimiter(), new_delimiter()
    # 96 random bits: 16 URL-safe characters (6 bits each) between two unit separators
    assert first != second and len(first) == 18
    assert first[0] == first[-1] == "\x1f" and re.fullmatch(r"[A-Za-z0-9_-]{16}", first[1:-1])


# ------------------------------------------------------------------ squeue

SQUEUE = captured("squeue.out")


def by_id(jobs: list[JobInfo]) -> dict[tuple[str, str | None], JobInfo]:
    return {(j.job_id, j.array_task_id): j for j in jobs}


def test_it_reads_a_running_job_from_squeue() -> None:
    job = by_id(parse_squeue(SQUEUE, DELIM))[("117", None)]
    assert job.array_job_id is None
    assert (job.name, job.comment, job.state, job.reason) == ("long", "axle:90ab", "RUNNING", "")
    assert (job.user, job.account, job.partition) == ("scientist", "vision", "debug")
    assert job.submit_time == datetime.fromtimestamp(1796002994, tz=UTC)
    assert job.start_time == datetime.fromtimestamp(1796002994, tz=UTC)
    assert job.elapsed_seconds == 6
    assert job.time_limit_minutes == 60
    assert (job.node_list, job.alloc_cpus, job.num_nodes) == ("vm", 1, 1)
    assert job.work_dir == "/var/lib/axle/cluster/scratch/scientist/capture"


def test_it_reads_each_array_task_from_squeue() -> None:
    tasks = [j for j in parse_squeue(SQUEUE, DELIM) if j.array_job_id == "118"]
    # --array lists every pending task on its own row; until a task starts it has no
    # id of its own, so its row carries the array's id.
    assert sorted((t.array_task_id, t.job_id, t.state) for t in tasks) == [
        ("0", "127", "RUNNING"),
        *((str(i), "118", "PENDING") for i in range(1, 7)),
    ]
    pending = next(t for t in tasks if t.array_task_id == "1")
    assert (pending.reason, pending.start_time, pending.node_list) == ("Resources", None, "")
    assert {t.time_limit_minutes for t in tasks} == {10}


def test_it_reads_a_held_job_without_comment() -> None:
    job = by_id(parse_squeue(SQUEUE, DELIM))[("119", None)]
    assert (job.comment, job.state, job.reason, job.partition) == ("", "PENDING", "JobHeldUser", "batch")
    assert job.time_limit_minutes == 24 * 60  # the partition's MaxTime, 1-00:00:00
    assert (job.start_time, job.node_list) == (None, "")


def test_free_text_with_pipes_and_spaces_survives() -> None:
    job = by_id(parse_squeue(SQUEUE, DELIM))[("120", None)]
    assert (job.name, job.comment) == ("a|b c", "x|y")


def test_a_job_name_with_newlines_and_a_forged_row_stays_that_jobs_name() -> None:
    # Job 121 was named 'evil\n<a row saying job 117 COMPLETED>\n' directly with sbatch.
    jobs = parse_squeue(SQUEUE, DELIM)
    evil = by_id(jobs)[("121", None)]
    assert evil.name.startswith("evil\n117\x1f117") and evil.comment == "axle:evil\nx"
    assert (evil.state, evil.reason) == ("PENDING", "JobHeldUser")
    assert [(j.state, j.name) for j in jobs if j.job_id == "117"] == [("RUNNING", "long")]
    # what the old one-row-per-line reading would have found: a second job 117
    assert sum(line.startswith("117") for line in SQUEUE.splitlines()) == 2


def test_a_forged_row_with_a_delimiter_it_guessed_is_refused_whole() -> None:
    guessed = new_delimiter()
    row = guessed.join(["7", "7", "N/A", "x", "c", "RUNNING", *[""] * 12, "7"])
    with pytest.raises(UnreadableOutput):
        parse_squeue(SQUEUE.replace("\n", f"\n{row}\n", 1), DELIM)


@pytest.mark.parametrize(
    "damage",
    [
        lambda out: out[:-1] + "x\n",  # the closing id of the last row does not match
        lambda out: out + "squeue: error: something\n",  # a stray line
        lambda out: out.replace(DELIM, "", 1),  # a row short of a field
        lambda out: out.replace("PENDING", "PEND\x07ING", 1),  # a control character in a fixed field
    ],
)
def test_output_that_is_not_whole_rows_is_refused_not_shifted(damage) -> None:
    with pytest.raises(UnreadableOutput):
        parse_squeue(damage(SQUEUE), DELIM)


def test_no_output_is_no_jobs() -> None:
    assert parse_squeue("", DELIM) == []


def test_a_memo_reuses_the_rows_that_did_not_change_from_one_call_to_the_next() -> None:
    memo = SqueueMemo()
    first = parse_squeue(SQUEUE, DELIM, memo)
    assert first == parse_squeue(SQUEUE, DELIM) and len(memo) == len(first)
    # The next call draws its own delimiter: the rows are compared field by field, so the
    # same rows cut by another delimiter are the same rows.
    again = new_delimiter()
    changed = SQUEUE.replace(DELIM, again).replace("JobHeldUser", "Priority", 1)
    second = parse_squeue(changed, again, memo)
    assert second == parse_squeue(changed, again)
    reused = [a is b for a, b in zip(first, second, strict=True)]
    assert reused.count(False) == 1  # the one row whose reason changed was parsed again
    assert next(j for j, r in zip(second, reused, strict=True) if not r).reason == "Priority"
    assert len(memo) == len(second)


def one_line_rows(delimiter: str) -> str:
    """The captured answer without its rows whose free text holds a newline, cut with
    `delimiter`: an answer a memo can read whole, line by line."""
    rows, width = [], len(SQUEUE_FIELDS) - 1
    tokens = SQUEUE.split(DELIM)
    first = tokens[0]
    for start in range(1, len(tokens), width):
        last, _, following = tokens[start + width - 1].partition("\n")
        values = [first, *tokens[start : start + width - 1], last]
        if not any("\n" in v for v in values):
            rows.append(delimiter.join(values) + "\n")
        first = following
    return "".join(rows)


def test_an_answer_of_known_rows_only_is_read_line_by_line_as_the_full_parse_reads_it() -> None:
    memo = SqueueMemo()
    before = new_delimiter()
    first = parse_squeue(one_line_rows(before), before, memo)
    assert len(first) == len(memo) >= 10
    after = new_delimiter()
    second = parse_squeue(one_line_rows(after), after, memo)
    assert second == parse_squeue(one_line_rows(after), after) == first
    assert all(a is b for a, b in zip(first, second, strict=True))
    # (read by the line-by-line path, which the captured answer, with its multi-line rows, is not)
    assert _all_known(one_line_rows(after), after, memo.infos) == second
    captured_memo = SqueueMemo()
    parse_squeue(SQUEUE, DELIM, captured_memo)
    assert _all_known(SQUEUE, DELIM, captured_memo.infos) is None
    # Forged or broken answers made of known rows are still refused whole.
    guessed = new_delimiter()
    known = one_line_rows(after)
    forged = [
        known + guessed.join(["7", "7", "N/A", "x", "c", "RUNNING", *[""] * 12, "7"]) + "\n",
        known + one_line_rows(before),  # known rows, but cut with another call's delimiter
        known + known.split("\n", 1)[0],  # a known row without its newline
        known[: len(known) // 2],
        known + "squeue: error: something\n",
    ]
    for output in forged:
        with pytest.raises(UnreadableOutput):
            parse_squeue(output, after, memo)
    # A field holding a NUL (which Slurm never prints) would make keys ambiguous: no memo.
    with_nul = known.replace("long", "lo\x00ng", 1)
    assert [j.name for j in parse_squeue(with_nul, after, memo)] == [j.name for j in parse_squeue(with_nul, after)]
    assert len(memo) == 0


def test_a_memo_spares_no_check_of_the_answer_in_hand() -> None:
    # Every row of the forged answers below is a row the memo knows; the framing is of this
    # answer and is checked again, and a refused answer leaves the memo as it was.
    memo = SqueueMemo()
    parse_squeue(SQUEUE, DELIM, memo)
    known = dict(memo.infos)
    guessed = new_delimiter()
    row = guessed.join(["7", "7", "N/A", "x", "c", "RUNNING", *[""] * 12, "7"])
    forged = [
        SQUEUE.replace("\n", f"\n{row}\n", 1),
        SQUEUE[:-1] + "x\n",
        SQUEUE + "squeue: error: something\n",
        SQUEUE.replace(DELIM, "", 1),
        SQUEUE + SQUEUE.split("\n", 1)[0],  # a known row's text without its newline
    ]
    for output in forged:
        with pytest.raises(UnreadableOutput):
            parse_squeue(output, DELIM, memo)
        assert memo.infos == known
    # The captured answer read with a delimiter other than its own is not rows at all.
    with pytest.raises(UnreadableOutput):
        parse_squeue(SQUEUE, new_delimiter(), memo)


@pytest.mark.parametrize("text", ["UNLIMITED", "Partition_Limit", "INVALID"])
def test_a_time_limit_that_is_no_duration_is_none(text: str) -> None:
    assert parse_minutes(text) is None


# ------------------------------------------------------------------ sacct

SACCT = captured("sacct.out")


def test_it_folds_steps_into_their_job_and_keeps_the_peak_memory() -> None:
    job = parse_sacct(SACCT, DELIM)[0]
    assert (job.job_id, job.name, job.state, job.exit_code, job.exit_signal) == ("115", "train", "COMPLETED", 0, 0)
    assert job.elapsed_seconds == 4
    assert job.time_limit_minutes == 60
    assert job.cpu_time_seconds == pytest.approx(0.048)
    assert job.max_rss_bytes == 72480 * 1024  # the 60 MiB the job held, plus python
    assert (job.alloc_cpus, job.alloc_gpus, job.node_list) == (2, 0, "vm")
    assert job.end_time == datetime.fromtimestamp(1796002992, tz=UTC)


def test_it_reads_array_tasks_from_sacct() -> None:
    jobs = {j.job_id: j for j in parse_sacct(SACCT, DELIM)}
    failed = jobs["128"]
    assert (failed.array_job_id, failed.array_task_id, failed.state, failed.exit_code) == ("118", "1", "FAILED", 3)
    running = jobs["129"]
    assert (running.array_task_id, running.state, running.end_time) == ("2", "RUNNING", None)
    # sacct, unlike squeue --array, keeps the tasks that never started as one row
    pending = jobs["118"]
    assert (pending.array_task_id, pending.state, pending.reason) == ("3-6%2", "PENDING", "JobArrayTaskLimit")
    assert (pending.node_list, pending.start_time) == ("", None)


def test_it_drops_who_cancelled_from_the_state() -> None:
    job = {j.job_id: j for j in parse_sacct(SACCT, DELIM)}["117"]
    # Slurm reports the SIGTERM only on the batch step (0:15): the allocation says 0:0
    assert (job.state, job.exit_code, job.exit_signal) == ("CANCELLED", 0, 0)
    assert job.max_rss_bytes == 4336 * 1024


def test_it_keeps_one_row_per_job_in_the_order_sacct_gives() -> None:
    assert [j.job_id for j in parse_sacct(SACCT, DELIM)] == ["115", "117", "127", "128", "129", "118"]


def test_accounting_keeps_the_comment_once_the_job_ended() -> None:
    # AccountingStoreFlags=job_comment: slurmdbd has a job's comment from its end record on
    comments = {j.job_id: j.comment for j in parse_sacct(SACCT, DELIM)}
    assert (comments["115"], comments["117"], comments["128"]) == ("axle:6f1c", "axle:90ab", "axle:77aa")


# ------------------------------------------------------------------ sinfo

SINFO = captured("sinfo.out")


def test_it_folds_sinfo_rows_into_partitions_and_nodes() -> None:
    state = parse_sinfo(SINFO, DELIM)
    assert [p.name for p in state.partitions] == ["debug", "batch"]
    assert state.default_partition == "debug"
    debug = state.partition("debug")
    assert debug is not None
    assert (debug.time_limit_minutes, debug.total_cpus, debug.nodes) == (60, 2, ["vm"])
    assert state.partition("batch").time_limit_minutes == 1440  # type: ignore[union-attr]
    [vm] = state.nodes
    assert (vm.name, vm.state, vm.cpus, vm.memory_mb, vm.partitions) == (
        "vm",
        "allocated",
        2,
        22900,
        ["debug", "batch"],
    )
    assert (vm.gres, vm.cpus_allocated) == ("", 2)


def test_an_unlimited_partition_of_gpu_nodes_from_sinfo() -> None:
    # The local cluster has neither: its real row with the time limit and GRES a GPU
    # partition without MaxTime shows (sinfo prints 'infinite' and the node's Gres).
    row = SINFO.splitlines()[0].split(DELIM)
    row[1:5] = ["gpu", "up", "infinite", "mixed"]
    row[9] = "gpu:a100:4(S:0-1)"
    state = parse_sinfo(DELIM.join(row) + "\n", DELIM)
    gpu = state.partition("gpu")
    assert gpu is not None and gpu.time_limit_minutes is None and gpu.total_gpus == 4


# ------------------------------------------------------------------ scontrol

SCONTROL = captured("scontrol.out").strip()


def test_it_reads_scontrol_one_liners_with_spaces_and_tres() -> None:
    job = parse_scontrol_oneliner(SCONTROL)
    assert job["JobName"] == "two words"
    assert (job["JobState"], job["Reason"]) == ("PENDING", "JobHeldUser")
    assert (job["NumCPUs"], job["NumTasks"], job["CPUs/Task"]) == ("2", "1", "2")
    assert job["TRES"] == "cpu=2,mem=4G,node=1,billing=2"
    assert job["ReqB:S:C:T"] == "0:0:*:*"
    assert job["MinMemoryNode"] == "4G"
    assert job["TimeLimit"] == "00:30:00"
    assert job["Comment"] == "axle:x y"
    assert job["NodeList"] == ""
    assert job.get("Missing") is None
