"""How the hub reads #SBATCH directives: the same way sbatch 22.05 does."""

from __future__ import annotations

import math

import pytest

from apps.integrations.slurm.policy import Limits, check_against_limits
from apps.integrations.slurm.request import effective_request
from apps.integrations.slurm.sbatch import (
    parse_array,
    parse_memory_mb,
    parse_script,
    parse_time_minutes,
    tokenize_directive,
)


def options(script: str) -> list[tuple[int | None, str, str | None]]:
    directives, _ = parse_script(script)
    return [(d.line, d.option, d.value) for d in directives]


# ------------------------------------------------------------------ reading directives


def test_it_reads_directives_after_the_shebang_blank_lines_and_comments() -> None:
    script = "#!/bin/bash\n\n# train the model\n#SBATCH -p debug\n   \n#SBATCH --time=10\n"
    assert options(script) == [(4, "partition", "debug"), (6, "time", "10")]


def test_it_stops_reading_directives_at_the_first_command() -> None:
    script = "#!/bin/bash\n#SBATCH -N 2\necho hello\n#SBATCH -N 4\n"
    assert options(script) == [(2, "nodes", "2")]


def test_it_ignores_an_indented_sbatch_line_as_a_comment() -> None:
    script = "#!/bin/bash\n  #SBATCH -N 4\n#SBATCH -n 3\n"
    assert options(script) == [(3, "ntasks", "3")]


def test_it_treats_lowercase_sbatch_as_a_comment() -> None:
    assert options("#sbatch -N 4\n#SBATCH -n 2\n") == [(2, "ntasks", "2")]


def test_it_keeps_going_after_an_indented_comment() -> None:
    assert options("#SBATCH -n 1\n\t# note\n#SBATCH -c 2\n") == [
        (1, "ntasks", "1"),
        (3, "cpus-per-task", "2"),
    ]


def test_it_accepts_the_legacy_slurm_magic_word_with_a_warning() -> None:
    directives, problems = parse_script("#SLURM -N 2\n")
    assert [(d.option, d.value) for d in directives] == [("nodes", "2")]
    assert "#SBATCH" in problems[0].message


def test_it_reads_short_options_with_and_without_a_space() -> None:
    assert options("#SBATCH -N 2\n#SBATCH -n4\n#SBATCH -p debug\n") == [
        (1, "nodes", "2"),
        (2, "ntasks", "4"),
        (3, "partition", "debug"),
    ]


def test_it_reads_long_options_with_equals_or_a_space() -> None:
    assert options("#SBATCH --time=1:00:00\n#SBATCH --time 2:00:00\n") == [
        (1, "time", "1:00:00"),
        (2, "time", "2:00:00"),
    ]


def test_it_reads_several_options_on_one_line() -> None:
    assert options("#SBATCH -N 2 --ntasks-per-node=4 -c2 --mem 8G\n") == [
        (1, "nodes", "2"),
        (1, "ntasks-per-node", "4"),
        (1, "cpus-per-task", "2"),
        (1, "mem", "8G"),
    ]


def test_it_reads_clustered_short_flags() -> None:
    assert options("#SBATCH -HN3\n") == [(1, "hold", None), (1, "nodes", "3")]


def test_it_accepts_a_unique_prefix_of_a_long_option_like_getopt() -> None:
    assert options("#SBATCH --part=batch --accou=vision\n") == [
        (1, "partition", "batch"),
        (1, "account", "vision"),
    ]


def test_it_refuses_an_ambiguous_prefix() -> None:
    _, problems = parse_script("#SBATCH --mem-per=4G\n")
    assert "ambiguous" in problems[0].message
    assert problems[0].line == 1


def test_it_reports_an_unknown_option_with_its_line() -> None:
    _, problems = parse_script("#!/bin/bash\n#SBATCH --gpu=2\n")
    assert problems[0].line == 2
    assert "--gpu" in problems[0].message


def test_it_ignores_a_trailing_comment_on_a_directive_line() -> None:
    assert options("#SBATCH --time=10 # ten minutes is plenty\n") == [(1, "time", "10")]


def test_it_ignores_a_comment_glued_to_a_value() -> None:
    assert options("#SBATCH -J train#nightly\n") == [(1, "job-name", "train")]


def test_it_keeps_a_hash_inside_quotes() -> None:
    assert options('#SBATCH -J "run #3"\n') == [(1, "job-name", "run #3")]


def test_it_groups_words_in_single_or_double_quotes() -> None:
    assert options("#SBATCH --comment='two words' -J \"a b\"\n") == [
        (1, "comment", "two words"),
        (1, "job-name", "a b"),
    ]


def test_it_takes_an_escaped_character_literally() -> None:
    assert options('#SBATCH -J say\\"hi\\"\n') == [(1, "job-name", 'say"hi"')]


def test_it_reports_an_unclosed_quote() -> None:
    _, problems = parse_script('#SBATCH -J "oops\n')
    assert "never closed" in problems[0].message


def test_it_stops_at_a_word_that_is_not_an_option_and_ignores_later_directives() -> None:
    directives, problems = parse_script("#SBATCH -N 2\n#SBATCH time=10\n#SBATCH -n 4\n")
    assert [(d.option, d.value) for d in directives] == [("nodes", "2")]
    assert problems[0].line == 2
    assert "not an option" in problems[0].message


def test_it_reads_options_glued_to_the_magic_word() -> None:
    assert options("#SBATCH--time=5\n") == [(1, "time", "5")]


def test_it_tolerates_windows_line_endings() -> None:
    assert options("#!/bin/bash\r\n#SBATCH -N 2\r\n#SBATCH -p debug\r\necho\r\n") == [
        (2, "nodes", "2"),
        (3, "partition", "debug"),
    ]


def test_it_refuses_heterogeneous_jobs() -> None:
    directives, problems = parse_script("#SBATCH -N 1\n#SBATCH hetjob\n#SBATCH -N 2\n")
    assert [(d.option, d.value) for d in directives] == [("nodes", "1")]
    assert "Heterogeneous" in problems[0].message


def test_it_takes_the_next_word_as_the_value_even_on_the_next_line() -> None:
    # getopt sees one argument vector for the whole script
    assert options("#SBATCH --partition\n#SBATCH debug\n") == [(1, "partition", "debug")]


def test_tokenizer_splits_on_any_whitespace() -> None:
    assert tokenize_directive(" -N\t2   -p  debug") == (
        ["-N", "2", "-p", "debug"],
        None,
    )


# ------------------------------------------------------------------ value parsers


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("30", 30),
        ("30:30", 31),  # seconds round up to a minute
        ("30:00", 30),
        ("1:00:00", 60),
        ("1:30:59", 91),
        ("2-0", 2880),
        ("2-12", 3600),
        ("1-02:30", 1590),
        ("1-02:30:01", 1591),
        ("0", 0),
    ],
)
def test_it_reads_every_slurm_time_format(text: str, minutes: int) -> None:
    assert parse_time_minutes(text) == minutes


@pytest.mark.parametrize("text", ["UNLIMITED", "infinite", "-1"])
def test_it_reads_unlimited_time(text: str) -> None:
    assert parse_time_minutes(text) == math.inf


@pytest.mark.parametrize("text", ["1h", "1:2:3:4", "1-2-3", "", "abc", "1.5"])
def test_it_refuses_times_slurm_does_not_understand(text: str) -> None:
    assert parse_time_minutes(text) is None


@pytest.mark.parametrize(
    ("text", "mb"),
    [
        ("100", 100),
        ("100M", 100),
        ("4G", 4096),
        ("4g", 4096),
        ("1T", 1048576),
        ("1025K", 2),
        ("0", 0),
    ],
)
def test_it_reads_memory_in_megabytes_by_default(text: str, mb: int) -> None:
    assert parse_memory_mb(text) == mb


@pytest.mark.parametrize("text", ["1.5G", "4GiB", "G", "-1"])
def test_it_refuses_memory_it_cannot_read(text: str) -> None:
    assert parse_memory_mb(text) is None


@pytest.mark.parametrize(
    ("text", "count", "max_index", "throttle"),
    [
        ("0-9", 10, 9, None),
        ("1,3,5-7", 5, 7, None),
        ("0-20:5", 5, 20, None),
        ("0-99%10", 100, 99, 10),
        ("7", 1, 7, None),
        ("0-15:4%2", 4, 12, 2),
    ],
)
def test_it_counts_array_tasks(text: str, count: int, max_index: int, throttle: int | None) -> None:
    spec = parse_array(text)
    assert spec is not None
    assert (spec.count, spec.max_index, spec.throttle) == (count, max_index, throttle)


@pytest.mark.parametrize("text", ["9-0", "a-b", "0-9%", "0-9:0", ""])
def test_it_refuses_bad_array_ranges(text: str) -> None:
    assert parse_array(text) is None


# ------------------------------------------------------------------ effective request

TRAIN = """#!/bin/bash
#SBATCH --job-name=train
#SBATCH --partition=debug
#SBATCH --account=vision
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --gres=gpu:2
#SBATCH --time=1-00:00:00
#SBATCH --output=logs/%x-%j.out

srun python train.py
"""


def test_it_resolves_a_realistic_training_script() -> None:
    req, problems = effective_request(TRAIN)
    assert problems == []
    assert (req.job_name, req.partition, req.account) == ("train", "debug", "vision")
    assert (req.nodes, req.ntasks, req.cpus_per_task, req.total_cpus) == (2, 8, 2, 16)
    assert req.mem_per_node_mb == 8192
    assert req.total_memory_mb == 16384
    assert req.gpus == 4
    assert req.time_limit_minutes == 1440
    assert req.output == "logs/%x-%j.out"


def test_hub_options_override_the_script() -> None:
    req, _ = effective_request(TRAIN, ["--output=/jobs/1/out", "--hold", "--job-name=hub"])
    assert req.output == "/jobs/1/out"
    assert req.hold is True
    assert req.job_name == "hub"
    assert req.winning["output"].line is None


def test_memory_per_cpu_is_multiplied_by_all_cpus() -> None:
    req, _ = effective_request("#SBATCH -n 4 -c 2 --mem-per-cpu=1G\n")
    assert req.total_cpus == 8
    assert req.mem_per_cpu_mb == 1024
    assert req.total_memory_mb == 8192


def test_memory_per_node_and_per_cpu_together_in_a_script_is_a_problem() -> None:
    _, problems = effective_request("#SBATCH --mem=1G\n#SBATCH --mem-per-cpu=1G\n")
    assert problems and problems[0].line == 2


def test_hub_memory_option_replaces_the_scripts_other_memory_option() -> None:
    req, problems = effective_request("#SBATCH --mem-per-cpu=1G\n", ["--mem=2G"])
    assert problems == []
    assert (req.mem_per_node_mb, req.mem_per_cpu_mb) == (2048, None)


@pytest.mark.parametrize(
    ("directive", "gpus"),
    [
        ("--gpus=3", 3),
        ("--gpus=a100:3", 3),
        ("-G 2", 2),
        ("--gpus-per-node=2 -N 3", 6),
        ("--gres=gpu:a100:2 -N 2", 4),
        ("--gres=gpu", 1),
        ("--gres=gpu:2,mps:100", 2),
        ("--gpus-per-task=1 -n 4", 4),
        ("-N 2", 0),
    ],
)
def test_it_counts_gpus_however_they_are_asked(directive: str, gpus: int) -> None:
    req, problems = effective_request(f"#SBATCH {directive}\n")
    assert problems == []
    assert req.gpus == gpus


def test_it_counts_an_array_and_its_throttle() -> None:
    req, _ = effective_request("#SBATCH -a 0-99%5\n")
    assert (req.array_task_count, req.array_max_index, req.array_throttle) == (
        100,
        99,
        5,
    )


def test_it_reads_a_node_range() -> None:
    req, _ = effective_request("#SBATCH -N 2-4\n")
    assert (req.nodes_min, req.nodes_max) == (2, 4)


def test_it_explains_an_unreadable_time_with_the_line_number() -> None:
    _, problems = effective_request("#!/bin/bash\n#SBATCH --time=2h\n")
    assert problems[0].line == 2
    assert "days-hours:minutes:seconds" in problems[0].message


def test_it_explains_unreadable_memory() -> None:
    _, problems = effective_request("#SBATCH --mem=lots\n")
    assert "4G" in problems[0].message


def test_defaults_are_one_task_one_cpu() -> None:
    req, problems = effective_request("#!/bin/bash\necho hi\n")
    assert problems == []
    assert (req.nodes, req.ntasks, req.cpus_per_task, req.total_cpus) == (1, 1, 1, 1)
    assert req.partition is None and req.time_limit_minutes is None


# ------------------------------------------------------------------ policy

LIMITS = Limits(
    allowed_partitions=frozenset({"debug"}),
    allowed_accounts=frozenset({"vision"}),
    allowed_qos=frozenset({"normal"}),
    default_partition="debug",
    max_nodes=2,
    max_cpus=16,
    max_gpus=4,
    max_mem_mb=32768,
    max_time_minutes=1440,
    max_array_size=100,
    job_root="/scratch/alice/jobs",
    workdir="/scratch/alice/jobs/42",
)


def problems_for(script: str, hub_args: list[str] | None = None) -> list[tuple[int | None, str]]:
    req, parse_problems = effective_request(script, hub_args or [])
    assert parse_problems == []
    return [(p.line, p.message) for p in check_against_limits(req, LIMITS)]


def test_a_script_within_the_grant_has_no_problems() -> None:
    assert problems_for(TRAIN) == []


def test_it_rejects_a_foreign_partition_with_its_line() -> None:
    [(line, message)] = problems_for("#!/bin/bash\n#SBATCH -p batch\n")
    assert line == 2
    assert "partition 'batch'" in message and "debug" in message


def test_it_checks_every_partition_of_a_list() -> None:
    [(_, message)] = problems_for("#SBATCH -p debug,batch\n")
    assert "'batch'" in message


def test_it_rejects_a_foreign_account_and_qos() -> None:
    found = problems_for("#SBATCH -A research\n#SBATCH --qos=high\n")
    assert [line for line, _ in found] == [1, 2]


def test_it_rejects_the_cluster_default_partition_when_not_granted() -> None:
    limits = Limits(allowed_partitions=frozenset({"batch"}), default_partition="debug")
    req, _ = effective_request("#!/bin/bash\necho\n")
    [problem] = check_against_limits(req, limits)
    assert "'debug'" in problem.message and problem.line is None


@pytest.mark.parametrize(
    ("script", "word"),
    [
        ("#SBATCH -N 3\n", "3 nodes"),
        ("#SBATCH -N 1-3\n", "3 nodes"),
        ("#SBATCH -n 8 -c 4\n", "32 CPUs"),
        ("#SBATCH --gpus=8\n", "8 GPUs"),
        ("#SBATCH --mem=64G\n", "65536 MB"),
        ("#SBATCH -n 16 --mem-per-cpu=4G\n", "65536 MB"),
        ("#SBATCH -t 2-0\n", "2880 minutes"),
        ("#SBATCH -t UNLIMITED\n", "no time limit"),
        ("#SBATCH -t 0\n", "no time limit"),
        ("#SBATCH --array=0-100\n", "101 array tasks"),
    ],
)
def test_it_rejects_requests_over_the_grants_limits(script: str, word: str) -> None:
    [(line, message)] = problems_for(script)
    assert line == 1
    assert word in message


def test_it_rejects_mem_zero_which_means_whole_nodes() -> None:
    [(_, message)] = problems_for("#SBATCH --mem=0\n")
    assert "all the memory" in message


@pytest.mark.parametrize(
    "directive",
    [
        "--uid=root",
        "--gid=0",
        "--get-user-env",
        "--get-user-env=10L",
        "--chdir=/tmp",
        "-D /tmp",
        "--export-file=/etc/environment",
        "-M other",
        "--wait",
        "--wrap=hostname",
    ],
)
def test_it_refuses_options_that_change_identity_or_escape(directive: str) -> None:
    [(line, message)] = problems_for(f"#!/bin/bash\n#SBATCH {directive}\n")
    assert line == 2
    assert "not allowed" in message


def test_the_hubs_own_chdir_is_not_a_problem() -> None:
    assert problems_for("#SBATCH -n 1\n", ["--chdir=/scratch/alice/jobs/42"]) == []


@pytest.mark.parametrize(
    "export",
    ["AXLE_SECRET_KEY", "ALL,MLFLOW_TRACKING_TOKEN", "ALL,AXLE_DB=x"],
)
def test_it_refuses_exporting_the_hubs_secrets(export: str) -> None:
    [(_, message)] = problems_for(f"#SBATCH --export={export}\n")
    assert "reserved" in message


@pytest.mark.parametrize("export", ["ALL", "NONE", "ALL,EPOCHS=3", "MLFLOW_TRACKING_URI"])
def test_it_allows_ordinary_exports(export: str) -> None:
    assert problems_for(f"#SBATCH --export={export}\n") == []


@pytest.mark.parametrize(
    "path",
    [
        "out.log",
        "logs/%x-%j.out",
        "/scratch/alice/jobs/7/%A_%a.out",
        "../41/out.log",
        "none",
        "/dev/null",
    ],
)
def test_it_allows_output_inside_the_job_root(path: str) -> None:
    assert problems_for(f"#SBATCH --output={path} --error={path}\n") == []


@pytest.mark.parametrize(
    "path",
    [
        "/tmp/out.log",
        "../../../bob/out",
        "/scratch/alice/jobs-other/x",
        "/scratch/alice/jobs/../x",
    ],
)
def test_it_refuses_output_outside_the_job_root(path: str) -> None:
    found = problems_for(f"#SBATCH -o {path}\n#SBATCH -e {path}\n#SBATCH -i {path}\n")
    assert [line for line, _ in found] == [1, 2, 3]
    assert "outside your job folder" in found[0][1]
