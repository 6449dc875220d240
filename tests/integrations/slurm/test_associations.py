"""The sacctmgr commands that write a grant to Slurm, and the parser of what it shows."""

from __future__ import annotations

import pytest

from apps.integrations.slurm import associations as a

SHOWN = "local|vision|approver|debug|00:10:00|cpu=1,mem=2G|3|3\nlocal|vision|approver|||||0\nlocal|vision||||||\n"


def test_it_reads_associations_and_leaves_the_accounts_own_rows_out() -> None:
    rows = a.parse_assocs(SHOWN)
    assert [(r.account, r.user, r.partition) for r in rows] == [
        ("vision", "approver", "debug"),
        ("vision", "approver", ""),
    ]
    assert rows[0].limits == {"MaxWall": "00:10:00", "MaxTRES": "cpu=1,mem=2G", "MaxJobs": "3", "MaxSubmit": "3"}


@pytest.mark.parametrize("damage", ["local|vision|approver\n", "local|vision|app\x07rover|||||\n", SHOWN + "x|y\n"])
def test_a_row_that_is_not_the_fields_asked_for_fails_the_read(damage: str) -> None:
    with pytest.raises(a.UnreadableAssociations):
        a.parse_assocs(damage)


def test_limits_are_written_and_shown_in_slurms_own_words() -> None:
    limits = a.Limits(max_wall_minutes=10, max_cpus=1, max_mem_mb=2048, max_jobs=3, max_submit=3)
    assert limits.settings() == ["MaxWall=10", "MaxTRES=cpu=1,mem=2048,node=-1", "MaxJobs=3", "MaxSubmitJobs=3"]
    assert limits.shown() == {"MaxWall": "00:10:00", "MaxTRES": "cpu=1,mem=2G", "MaxJobs": "3", "MaxSubmit": "3"}
    assert a.Limits(max_gpus=2).settings()[1] == "MaxTRES=cpu=-1,mem=-1,node=-1,gres/gpu=2"
    assert a.Limits().settings(clear_gpus=True)[1].endswith("gres/gpu=-1")
    assert (a.format_minutes(2000), a.format_mem(1500), a.format_mem(3 << 20)) == ("1-09:20:00", "1500M", "3T")


@pytest.mark.parametrize("name", ["a,b", "x=y", "", "-u", "a b", "root\n"])
def test_names_that_could_widen_a_where_clause_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        a.modify_assoc_args("local", name, "vision", "", "MaxSubmitJobs=0")


def test_the_association_without_a_partition_is_selected_by_an_empty_partition() -> None:
    assert a.modify_assoc_args("local", "bob", "vision", "", "MaxSubmitJobs=0") == [
        "sacctmgr", "-i", "modify", "user", "where", "name=bob", "cluster=local", "account=vision", "partition=",
        "set", "MaxSubmitJobs=0",
    ]  # fmt: skip
