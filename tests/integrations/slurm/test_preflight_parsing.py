"""What sbatch --test-only and sshare print, read (pure)."""

from datetime import UTC, datetime

import pytest

from apps.integrations.slurm import parsing


def test_it_reads_the_start_estimate_of_test_only():
    err = "sbatch: Job 1502 to start at 1796016473 using 4 processors on nodes vm in partition debug\n"
    estimate = parsing.parse_test_only(err)
    assert estimate.start == datetime.fromtimestamp(1796016473, tz=UTC)
    assert (estimate.processors, estimate.nodes, estimate.partition) == (4, "vm", "debug")
    assert estimate.message == "Job 1502 to start at 1796016473 using 4 processors on nodes vm in partition debug"


def test_an_iso_start_without_a_partition_is_read_too():
    estimate = parsing.parse_test_only(
        "sbatch: Job 7 to start at 2026-11-30T06:00:00 using 1 processors on nodes n[1-2]"
    )
    assert estimate.start == datetime(2026, 11, 30, 6, 0) and estimate.nodes == "n[1-2]" and estimate.partition == ""


def test_no_estimate_is_none():
    assert parsing.parse_test_only("sbatch: error: Batch job submission failed: Invalid account") is None


def test_it_reads_the_users_fairshare_rows():
    out = "vision|scientist|1||0|0.000000|0.000000\nnlp|scientist|10|0.5|12345|0.25|0.75\n"
    rows = parsing.parse_sshare(out)
    assert [(r.account, r.user, r.raw_shares, r.fairshare) for r in rows] == [
        ("vision", "scientist", "1", 0.0),
        ("nlp", "scientist", "10", 0.75),
    ]
    assert rows[0].norm_shares is None and rows[1].raw_usage == 12345 and rows[1].effective_usage == 0.25


def test_a_row_of_the_wrong_width_fails_the_read():
    with pytest.raises(parsing.UnreadableOutput, match="6 fields where 7"):
        parsing.parse_sshare("vision|scientist|1|0|0|0\n")


def test_sshare_is_asked_for_the_users_own_rows():
    args = parsing.sshare_args("scientist")
    assert args[0] == "sshare" and "--users" in args and args[args.index("--users") + 1] == "scientist"
