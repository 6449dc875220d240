"""The exact command lines the SSH transport runs, and pure parsers for their output.

A job's name, comment and working directory are the user's own text: they may hold '|',
0x1f, even newlines, so no fixed delimiter is safe (a newline and a crafted row in a job
name once forged another job's state). Every read therefore separates its fields with a
delimiter drawn at random for that one call (`new_delimiter()`), which no job's text can
contain since it did not exist when the job was named. Rows are read by position, not by
lines: each row starts and ends with the job's (or node's) id, fields a user cannot
choose, so a newline inside a free-text field is just part of that field. Any output that
does not fall into whole rows of exactly the fields asked for fails the whole read: it
is never shifted or partly used. Times are asked as Unix seconds (`SLURM_TIME_FORMAT=%s`)
so they carry no time zone ambiguity.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Container, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from .base import ClusterState, FairShare, JobInfo, NodeInfo, PartitionInfo, StartEstimate
from .names import CONTROL

TIME_ENV = {"SLURM_TIME_FORMAT": "%s"}


def new_delimiter() -> str:
    """A field separator for one call: 96 random bits (16 URL-safe characters) between two
    unit separators. A forged row needs the delimiter of the very call that reads it, drawn
    after the job was named: 2**96 is as far out of a guess's reach as 2**128 was, and a
    delimiter appears 18 times in each of 10,000 squeue rows a tracking cycle, so 18
    characters instead of 34 make that answer ~35 % smaller to read and to split."""
    return f"\x1f{secrets.token_urlsafe(12)}\x1f"


class UnreadableOutput(ValueError):
    """Slurm printed something that is not whole rows of the fields asked for."""


# squeue: one row per job, pending array tasks expanded (--array).
SQUEUE_FIELDS: tuple[tuple[str, str], ...] = (
    ("job_id", "%A"),
    ("array_job_id", "%F"),
    ("array_task_id", "%K"),
    ("name", "%j"),
    ("comment", "%k"),
    ("state", "%T"),
    ("reason", "%r"),
    ("user", "%u"),
    ("account", "%a"),
    ("partition", "%P"),
    ("submit_time", "%V"),
    ("start_time", "%S"),
    ("time_used", "%M"),
    ("time_limit", "%l"),
    ("node_list", "%N"),
    ("cpus", "%C"),
    ("nodes", "%D"),
    ("work_dir", "%Z"),
    ("end", "%A"),
)

SACCT_FIELDS: tuple[str, ...] = (
    "JobIDRaw",
    "JobID",
    "JobName",
    "Comment",
    "State",
    "Reason",
    "User",
    "Account",
    "Partition",
    "Submit",
    "Start",
    "End",
    "ElapsedRaw",
    "TimelimitRaw",
    "NodeList",
    "ExitCode",
    "TotalCPU",
    "MaxRSS",
    "AllocCPUS",
    "AllocTRES",
    "NNodes",
    "WorkDir",
    "JobIDRaw",
)
SACCT_FORMAT = ",".join(SACCT_FIELDS)

# sinfo: one row per (node, partition).
SINFO_FIELDS: tuple[tuple[str, str], ...] = (
    ("node", "%N"),
    ("partition", "%P"),
    ("avail", "%a"),
    ("time_limit", "%l"),
    ("state", "%T"),
    ("cpus", "%c"),
    ("cpus_state", "%C"),
    ("memory", "%m"),
    ("free_memory", "%e"),
    ("gres", "%G"),
    ("reason", "%E"),
    ("end", "%N"),
)


def squeue_args(delimiter: str, user: str | None = None, *, all_states: bool = False) -> list[str]:
    fmt = delimiter.join(code for _, code in SQUEUE_FIELDS)
    args = ["squeue", "--noheader", "--array", f"--format={fmt}"]
    args.append(f"--user={user}" if user else "--me")
    if all_states:
        args.append("--states=all")
    return args


def sacct_args(delimiter: str, job_ids: Iterable[str] | None = None, *, since: str | None = None) -> list[str]:
    args = [
        "sacct",
        "--noheader",
        "--parsable2",
        f"--delimiter={delimiter}",
        f"--format={SACCT_FORMAT}",
    ]
    if job_ids is not None:
        args.append("--jobs=" + ",".join(job_ids))
    if since:
        args.append(f"--starttime={since}")
    return args


def sacct_window_args(delimiter: str, window) -> list[str]:
    """sacct for every allocation that ran in `window` (a base.UsageWindow): `-X`, since
    usage is charged per allocation; `--user`/`--allusers` as the window asks."""
    args = [
        *sacct_args(delimiter),
        "--allocations",
        f"--starttime=now-{window.start_seconds_ago}seconds",
        f"--endtime=now-{window.end_seconds_ago}seconds" if window.end_seconds_ago else "--endtime=now",
    ]
    if window.users or window.accounts:
        args.append("--allusers")
    if window.users:
        args.append("--user=" + ",".join(window.users))
    if window.accounts:
        args.append("--accounts=" + ",".join(window.accounts))
    return args


def sinfo_args(delimiter: str) -> list[str]:
    fmt = delimiter.join(code for _, code in SINFO_FIELDS)
    return ["sinfo", "--noheader", "--Node", f"--format={fmt}"]


# ------------------------------------------------------------------ scalar parsers

_EMPTY = {"", "N/A", "n/a", "(null)", "None", "NONE", "Unknown", "INVALID"}


def _text(value: str) -> str:
    return "" if value in ("(null)", "N/A") else value


@lru_cache(maxsize=32768)
def parse_duration(text: str) -> float | None:
    """Seconds in a Slurm duration: '1-02:03:04', '02:03:04', '03:04', '00:01.234'.
    None for 'UNLIMITED', 'INVALID', 'N/A' and anything unreadable."""
    s = text.strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+(?:\.\d+)?)(?::(\d+(?:\.\d+)?))?(?::(\d+(?:\.\d+)?))?", s)
    if not m:
        return None
    days, a, b, c = m.groups()
    parts = [float(x) for x in (a, b, c) if x is not None]
    if days is not None and len(parts) == 1:
        parts += [0.0, 0.0]  # 'D-HH'
    if len(parts) == 3:
        h, mi, sec = parts
    elif len(parts) == 2:
        h, (mi, sec) = 0.0, parts
    else:
        h, mi, sec = 0.0, 0.0, parts[0]
    return (int(days or 0) * 86400) + h * 3600 + mi * 60 + sec


@lru_cache(maxsize=32768)
def parse_minutes(text: str) -> int | None:
    """A time limit: 'UNLIMITED' and 'Partition_Limit' give None, else whole minutes."""
    s = text.strip()
    if s.isdigit():
        return int(s)
    seconds = parse_duration(s)
    return None if seconds is None else int(seconds // 60)


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def parse_size_bytes(text: str, default_unit: str = "") -> int | None:
    """'1234K', '12.50M', '2G', '0' -> bytes. `default_unit` applies to bare numbers."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTP]?)", text.strip().upper())
    if not m:
        return None
    unit = m.group(2) or default_unit
    return round(float(m.group(1)) * _UNITS[unit])


@lru_cache(maxsize=32768)
def parse_time(text: str) -> datetime | None:
    """A timestamp as Slurm prints it: Unix seconds (our SLURM_TIME_FORMAT) or ISO 8601.
    ISO without an offset is the cluster's local time and is returned naive."""
    s = text.strip()
    if s in _EMPTY or s == "0":
        return None
    if s.isdigit():
        return datetime.fromtimestamp(int(s), tz=UTC)
    try:
        return datetime.fromisoformat(s)
    except ValueError:
        return None


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """'2:0' -> (exit status 2, signal 0)."""
    m = re.fullmatch(r"(\d+):(\d+)", text.strip())
    if not m:
        return None, None
    return int(m.group(1)), int(m.group(2))


def parse_tres(text: str) -> dict[str, str]:
    """'cpu=2,mem=2G,node=1,gres/gpu=1' -> {'cpu': '2', 'mem': '2G', ...}."""
    out: dict[str, str] = {}
    for item in text.split(","):
        key, eq, value = item.partition("=")
        if eq:
            out[key.strip()] = value.strip()
    return out


def gpus_in_gres(text: str) -> int:
    """GPUs in a node's GRES string: 'gpu:4', 'gpu:a100:4(S:0-1)', 'gpu:2,mps:100'."""
    total = 0
    for entry in re.split(r",(?![^(]*\))", text):
        entry = re.sub(r"\(.*\)$", "", entry.strip())
        parts = entry.split(":")
        if parts[0] == "gpu" and len(parts) > 1 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def _int(text: str) -> int | None:
    s = text.strip()
    return int(s) if s.isdigit() else None


_ID = re.compile(r"[0-9A-Za-z_.\[\]%,+-]+")


def rows(output: str, delimiter: str, names: Iterable[str], free: Iterable[str] = ()) -> list[dict[str, str]]:
    """Split `output` into rows of exactly `names`, by position. The first and the last
    field of each row are the same id (neither holds a newline): a row ends where the
    text between two delimiters is '<id>\\n<next id>', wherever newlines the `free`
    fields hold. Raises UnreadableOutput unless the output is whole, checked rows."""
    names = list(names)
    return [dict(zip(names, values, strict=True)) for values in _split_rows(output, delimiter, names, free)]


def _split_rows(
    output: str, delimiter: str, names: list[str], free: Iterable[str], checked_before: Container[str] = ()
) -> Iterable[tuple[str, ...]]:
    """`rows()` as tuples of field values. A row whose `_row_key` is in `checked_before`
    was checked whole, control characters included, by an earlier call: the control check
    is a function of the values alone, so it is not repeated (the framing checks are: they
    are about this output)."""
    free = set(free)
    if not output.strip():
        return
    if len(delimiter) < 16:
        raise ValueError("the delimiter must be one drawn for this call")
    tokens = output.split(delimiter)
    width = len(names) - 1  # delimiters per row
    if (len(tokens) - 1) % width:
        raise UnreadableOutput(f"Slurm's output does not fall into rows of {len(names)} fields.")
    checked = [i for i, name in enumerate(names) if name not in free]
    first = tokens[0]
    for start in range(1, len(tokens), width):
        last, newline, following = tokens[start + width - 1].partition("\n")
        if not newline or first != last or not _ID.fullmatch(last):
            raise UnreadableOutput(f"A row of Slurm's output is not whole: {last[:80]!r}.")
        values = (first, *tokens[start : start + width - 1], last)
        # One search over the row's checked fields (10,000 rows a tracking cycle); the field
        # is named only when there is something to say.
        if CONTROL.search("".join([values[i] for i in checked])) and _row_key(values) not in checked_before:
            for i in checked:
                if CONTROL.search(values[i]):
                    raise UnreadableOutput(f"Slurm's {names[i]} field holds a control character: {values[i][:80]!r}.")
        yield values
        first = following
    if first != "":
        raise UnreadableOutput(f"Slurm's output ends with a partial row: {first[:80]!r}.")


# A row's fields joined by NUL: the memo's key for that row. Slurm's strings are C strings, so
# no field holds a NUL (an answer that does is read without the memo), and joining fields
# that hold no NUL by NUL is one-to-one: equal keys are equal tuples of fields.
_NUL = "\x00"


def _row_key(values: tuple[str, ...]) -> str:
    return _NUL.join(values)


# ------------------------------------------------------------------ squeue


SQUEUE_FREE = ("name", "comment", "work_dir")


class SqueueMemo:
    """The rows one account's last squeue answer held, each with the JobInfo parsed from it:
    kept by its caller from one tracking cycle to the next (per grant), so that a steady
    cycle parses only the rows that changed (10,000 held jobs: ~0.2 s of CPU a cycle
    otherwise, most of what a steady cycle costs the hub).

    Why reuse is safe against forged output. The per-call delimiter is what stops a job's own
    text from shaping rows; it must still do all its work on every call, so nothing from the
    memo may stand in for a check of *this* answer's framing. A row is known by its fields
    joined by NUL (`_row_key`), never by its raw text: the raw text holds the delimiter,
    new each call, so it would never match; and a key made with a replacement that a field
    could hold (the 0x1f a forged name carries) could make two different splits equal. NUL
    is in no field, so the key is one-to-one with the tuple of fields, and the JobInfo is a
    function of that tuple alone: reusing it gives exactly what parsing again would.

    Two ways to read an answer with a memo, both equivalent to the full parse:
    - the whole answer at once (`_all_known`): cut at newlines, this call's delimiter
      replaced by NUL in each line (the delimiter holds no newline). If every line is a key
      of the memo and the answer ends with a newline, the answer *is* those rows, framing
      and all: each key is the NUL-join of a row that passed every check (19 fields, first
      == last == a job id, no control character in a fixed field) and holds no newline, and
      rows are what lies between newlines once no field holds one. Any other line (a new or changed row, a row whose
      free text holds a newline, a forged or stray line, a partial row) sends the whole
      answer to the full parse below.
    - the full parse: split by this call's delimiter and every framing check, row by row;
      a row whose key is in the memo reuses its JobInfo (and skips only the control
      check, a function of the same fields).
    An answer holding a NUL uses neither (keys would not be one-to-one). The JobInfo objects
    are shared between cycles: callers must not change them."""

    __slots__ = ("infos",)

    def __init__(self) -> None:
        self.infos: dict[str, JobInfo] = {}

    def __len__(self) -> int:
        return len(self.infos)


_SQUEUE_NAMES = [name for name, _ in SQUEUE_FIELDS]


def parse_squeue(output: str, delimiter: str, memo: SqueueMemo | None = None) -> list[JobInfo]:
    """Rows of `squeue_args(delimiter)`, one JobInfo each. With `memo`, a row identical (field
    by field) to one of the memo's is not parsed again, and the memo ends holding this
    answer's rows (only if the whole answer was read: an unreadable one leaves it as it was).
    """
    if memo is not None and _NUL in output:
        memo.infos = {}
        memo = None
    known = memo.infos if memo is not None else {}
    if known and len(delimiter) >= 16:
        jobs = _all_known(output, delimiter, known)
        if jobs is not None:
            return jobs  # the memo stays as it is: this answer is its rows
    kept: dict[str, JobInfo] = {}
    jobs = []
    for values in _split_rows(output, delimiter, _SQUEUE_NAMES, SQUEUE_FREE, known):
        if memo is None:
            jobs.append(_squeue_job(dict(zip(_SQUEUE_NAMES, values, strict=True))))
            continue
        key = _row_key(values)
        info = known.get(key)
        if info is None:
            info = _squeue_job(dict(zip(_SQUEUE_NAMES, values, strict=True)))
        kept[key] = info
        jobs.append(info)
    if memo is not None:
        memo.infos = kept
    return jobs


def _all_known(output: str, delimiter: str, known: dict[str, JobInfo]) -> list[JobInfo] | None:
    """The answer's rows if every one of its lines is a row of `known` (see SqueueMemo),
    else None. `output` holds no NUL."""
    lines = output.split("\n")  # (line by line is faster than one replace over the answer)
    if lines.pop() != "":
        return None  # no newline at the end: a partial row
    jobs = []
    for line in lines:
        info = known.get(line.replace(delimiter, _NUL))
        if info is None:
            return None
        jobs.append(info)
    return jobs


def _squeue_job(row: dict[str, str]) -> JobInfo:
    is_array = row["array_task_id"] not in _EMPTY
    return JobInfo(
        job_id=row["job_id"],
        array_job_id=row["array_job_id"] if is_array else None,
        array_task_id=row["array_task_id"].strip("[]") if is_array else None,
        name=row["name"],
        comment=_text(row["comment"]),
        state=row["state"],
        reason="" if row["reason"] in ("None", "(null)") else row["reason"],
        user=row["user"],
        account=_text(row["account"]),
        partition=row["partition"],
        submit_time=parse_time(row["submit_time"]),
        start_time=parse_time(row["start_time"]),
        elapsed_seconds=_seconds(row["time_used"]),
        time_limit_minutes=parse_minutes(row["time_limit"]),
        node_list=_text(row["node_list"]),
        alloc_cpus=_int(row["cpus"]),
        num_nodes=_int(row["nodes"]),
        work_dir=_text(row["work_dir"]),
    )


def _seconds(text: str) -> int | None:
    value = parse_duration(text)
    return None if value is None else int(value)


# ------------------------------------------------------------------ sacct

_ARRAY_JOB_ID = re.compile(r"^(\d+)_(\[?[^.\]]+\]?)")


SACCT_FREE = ("JobName", "Comment", "WorkDir")


def parse_sacct(output: str, delimiter: str) -> list[JobInfo]:
    """Rows of `sacct_args()` folded into one JobInfo per job or array task: the
    allocation row gives state, times and exit code; steps (`.batch`, `.0`...) add the
    peak memory, which Slurm only measures per step."""
    jobs: dict[str, JobInfo] = {}
    order: list[str] = []
    step_rss: dict[str, int] = {}
    for row in rows(output, delimiter, SACCT_FIELDS, SACCT_FREE):
        raw = row["JobIDRaw"]
        job_key, dot, _step = raw.partition(".")
        if dot:
            rss = parse_size_bytes(row["MaxRSS"])
            if rss is not None:
                step_rss[job_key] = max(step_rss.get(job_key, 0), rss)
            continue
        array = _ARRAY_JOB_ID.match(row["JobID"])
        exit_code, exit_signal = parse_exit_code(row["ExitCode"])
        tres = parse_tres(row["AllocTRES"])
        gpus = tres.get("gres/gpu")
        mem = parse_size_bytes(tres.get("mem", ""), "M")
        state = row["State"].split(" ")[0]  # 'CANCELLED by 1000' -> 'CANCELLED'
        info = JobInfo(
            job_id=raw,
            array_job_id=array.group(1) if array else None,
            array_task_id=array.group(2).strip("[]") if array else None,
            name=row["JobName"],
            comment=_text(row["Comment"]),
            state=state,
            reason="" if row["Reason"] in ("None", "(null)") else row["Reason"],
            user=row["User"],
            account=row["Account"],
            partition=row["Partition"],
            submit_time=parse_time(row["Submit"]),
            start_time=parse_time(row["Start"]),
            end_time=parse_time(row["End"]),
            elapsed_seconds=_int(row["ElapsedRaw"]),
            time_limit_minutes=_int(row["TimelimitRaw"]),
            node_list="" if row["NodeList"] in ("None assigned", "(null)") else row["NodeList"],
            exit_code=exit_code,
            exit_signal=exit_signal,
            cpu_time_seconds=parse_duration(row["TotalCPU"]),
            alloc_cpus=_int(row["AllocCPUS"]),
            alloc_gpus=int(gpus) if gpus and gpus.isdigit() else (0 if tres else None),
            alloc_mem_mb=None if mem is None else mem // (1 << 20),
            num_nodes=_int(row["NNodes"]),
            work_dir=row["WorkDir"],
        )
        if raw not in jobs:
            order.append(raw)
        jobs[raw] = info  # a requeued job appears twice: the last row is current
    for key, rss in step_rss.items():
        if key in jobs:
            jobs[key].max_rss_bytes = rss
    return [jobs[k] for k in order]


# ------------------------------------------------------------------ sinfo


def parse_sinfo(output: str, delimiter: str) -> ClusterState:
    """Rows of `sinfo_args(delimiter)`, folded into partitions and nodes. A node's reason
    is an administrator's free text."""
    names = [name for name, _ in SINFO_FIELDS]
    nodes: dict[str, NodeInfo] = {}
    partitions: dict[str, PartitionInfo] = {}
    for row in rows(output, delimiter, names, ("reason",)):
        part_name = row["partition"]
        is_default = part_name.endswith("*")
        part_name = part_name.rstrip("*")
        name = row["node"]
        cpus = _int(row["cpus"]) or 0
        memory = _int(row["memory"]) or 0
        gres = _text(row["gres"])
        gpus = gpus_in_gres(gres)
        if name not in nodes:
            alloc = row["cpus_state"].split("/")
            nodes[name] = NodeInfo(
                name=name,
                state=row["state"],
                cpus=cpus,
                memory_mb=memory,
                gpus=gpus,
                gres=gres,
                cpus_allocated=_int(alloc[0]) if alloc else None,
                free_memory_mb=_int(row["free_memory"]),
                reason="" if row["reason"] == "none" else row["reason"],
            )
        nodes[name].partitions.append(part_name)
        part = partitions.get(part_name)
        if part is None:
            limit = row["time_limit"]
            part = partitions[part_name] = PartitionInfo(
                name=part_name,
                state=row["avail"].upper(),
                is_default=is_default,
                time_limit_minutes=None if limit.lower() == "infinite" else parse_minutes(limit),
            )
        part.nodes.append(name)
        part.total_cpus += cpus
        part.total_memory_mb += memory
        part.total_gpus += gpus
    return ClusterState(partitions=list(partitions.values()), nodes=list(nodes.values()))


# ------------------------------------------------------------------ sbatch / scontrol


def parse_sbatch_parsable(output: str) -> str | None:
    """`sbatch --parsable` prints 'jobid' or 'jobid;cluster' on the last line."""
    for line in reversed(output.strip().splitlines()):
        job_id = line.strip().split(";")[0]
        if job_id.isdigit():
            return job_id
    return None


_SCONTROL_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


@dataclass(frozen=True)
class ScontrolJob:
    fields: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.fields[key]

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.fields.get(key, default)


def parse_scontrol_oneliner(line: str) -> ScontrolJob:
    """`scontrol show job -o ID`: 'Key=Value Key=Value ...' where values may hold spaces
    (JobName, Comment) and '=' (TRES); a key is a word directly followed by '='."""
    fields: dict[str, str] = {}
    matches = list(_SCONTROL_KEY.finditer(line))
    known: list[re.Match[str]] = []
    for m in matches:
        # inside a TRES value ('cpu=1,mem=1G') keys follow a comma, not a space
        if m.start() == 0 or line[m.start()].isspace():
            known.append(m)
    for i, m in enumerate(known):
        end = known[i + 1].start() if i + 1 < len(known) else len(line)
        fields[m.group(1)] = line[m.end() : end].strip()
    return ScontrolJob(fields)


# sbatch --test-only writes its answer to stderr, for example (times as TIME_ENV asks):
#   sbatch: Job 1502 to start at 1796016473 using 1 processors on nodes vm in partition debug
_TEST_ONLY = re.compile(
    r"Job (?P<job>\d+) to start at (?P<start>\S+) using (?P<cpus>\d+) processors on nodes (?P<nodes>\S+)"
    r"(?: in partition (?P<partition>\S+))?"
)


def parse_test_only(output: str) -> StartEstimate | None:
    """Slurm's start estimate from what `sbatch --test-only` printed, or None when it
    printed no estimate."""
    match = _TEST_ONLY.search(output)
    if match is None:
        return None
    line = next((ln for ln in output.splitlines() if match.group(0) in ln), match.group(0))
    return StartEstimate(
        start=parse_time(match["start"]),
        processors=int(match["cpus"]),
        nodes=match["nodes"],
        partition=match["partition"] or "",
        message=line.removeprefix("sbatch: ").strip(),
    )


SSHARE_FIELDS = ("Account", "User", "RawShares", "NormShares", "RawUsage", "EffectvUsage", "FairShare")


def sshare_args(user: str) -> list[str]:
    """The user's own associations (-U: user rows only), '|'-separated without a header.
    Account and user names cannot hold '|' (Slurm refuses them), so a fixed delimiter is safe."""
    return ["sshare", "--noheader", "--parsable2", "--users", user, "-U", f"--format={','.join(SSHARE_FIELDS)}"]


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_sshare(output: str) -> list[FairShare]:
    shares = []
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != len(SSHARE_FIELDS):
            raise UnreadableOutput(f"sshare printed {len(fields)} fields where {len(SSHARE_FIELDS)} were asked")
        account, user, raw_shares, norm_shares, raw_usage, effective, fairshare = (f.strip() for f in fields)
        shares.append(
            FairShare(
                account=account,
                user=user,
                raw_shares=raw_shares,
                norm_shares=_float(norm_shares),
                raw_usage=_int(raw_usage),
                effective_usage=_float(effective),
                fairshare=_float(fairshare),
            )
        )
    return shares
