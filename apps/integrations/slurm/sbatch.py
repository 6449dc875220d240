"""Read `#SBATCH` directives the way sbatch (Slurm 22.05) reads them, resolve the request
they make, and check it against a grant's limits. Pure functions, no I/O.

The rules come from Slurm's own source (src/sbatch/opt.c `_opt_batch_script` and
`_get_argument`, src/common/slurm_opt.c, src/common/parse_time.c):

* A directive is a line that starts with ``#SBATCH`` (or the legacy ``#SLURM``) at column 0,
  case-sensitive. An indented ``  #SBATCH`` is an ordinary comment and is ignored.
* Blank lines and lines whose first non-blank character is ``#`` (the shebang, comments)
  are skipped; the first other line is a command and ends the directives.
* A directive line is split into words like a tiny shell: whitespace separates, single or
  double quotes group, a backslash takes the next character literally, and an unquoted
  ``#`` starts a comment that runs to the end of the line.
* The words of all directive lines form one argument vector that goes through
  ``getopt_long`` with a leading ``+``: short options (``-N 2``, ``-N2``, clusters like
  ``-Hk``), long options (``--time=1:00``, ``--time 1:00``, unique prefixes such as
  ``--part=debug``), and option processing stops for good at the first word that is not an
  option, which silently drops every later directive.
* Options given on sbatch's command line (the hub's) override the script's.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

REQUIRED = "required"
OPTIONAL = "optional"
NONE = "none"

# sbatch 22.05's options (from `man sbatch`), long name -> (short letter, argument kind).
# The full table matters even for options we never interpret: getopt accepts a unique
# prefix of a long option, so what is "unique" depends on every name sbatch knows.
OPTIONS: dict[str, tuple[str | None, str]] = {
    "account": ("A", REQUIRED),
    "acctg-freq": (None, REQUIRED),
    "array": ("a", REQUIRED),
    "batch": (None, REQUIRED),
    "bb": (None, REQUIRED),
    "bbf": (None, REQUIRED),
    "begin": ("b", REQUIRED),
    "chdir": ("D", REQUIRED),
    "cluster-constraint": (None, REQUIRED),
    "clusters": ("M", REQUIRED),
    "comment": (None, REQUIRED),
    "constraint": ("C", REQUIRED),
    "container": (None, REQUIRED),
    "contiguous": (None, NONE),
    "core-spec": ("S", REQUIRED),
    "cores-per-socket": (None, REQUIRED),
    "cpu-freq": (None, REQUIRED),
    "cpus-per-gpu": (None, REQUIRED),
    "cpus-per-task": ("c", REQUIRED),
    "deadline": (None, REQUIRED),
    "delay-boot": (None, REQUIRED),
    "dependency": ("d", REQUIRED),
    "distribution": ("m", REQUIRED),
    "error": ("e", REQUIRED),
    "exclude": ("x", REQUIRED),
    "exclusive": (None, OPTIONAL),
    "export": (None, REQUIRED),
    "export-file": (None, REQUIRED),
    "extra-node-info": ("B", REQUIRED),
    "get-user-env": (None, OPTIONAL),
    "gid": (None, REQUIRED),
    "gpu-bind": (None, REQUIRED),
    "gpu-freq": (None, REQUIRED),
    "gpus": ("G", REQUIRED),
    "gpus-per-node": (None, REQUIRED),
    "gpus-per-socket": (None, REQUIRED),
    "gpus-per-task": (None, REQUIRED),
    "gres": (None, REQUIRED),
    "gres-flags": (None, REQUIRED),
    "help": ("h", NONE),
    "hint": (None, REQUIRED),
    "hold": ("H", NONE),
    "ignore-pbs": (None, NONE),
    "input": ("i", REQUIRED),
    "job-name": ("J", REQUIRED),
    "kill-on-invalid-dep": (None, REQUIRED),
    "licenses": ("L", REQUIRED),
    "mail-type": (None, REQUIRED),
    "mail-user": (None, REQUIRED),
    "mcs-label": (None, REQUIRED),
    "mem": (None, REQUIRED),
    "mem-bind": (None, REQUIRED),
    "mem-per-cpu": (None, REQUIRED),
    "mem-per-gpu": (None, REQUIRED),
    "mincpus": (None, REQUIRED),
    "network": (None, REQUIRED),
    "nice": (None, OPTIONAL),
    "no-kill": ("k", OPTIONAL),
    "no-requeue": (None, NONE),
    "nodefile": ("F", REQUIRED),
    "nodelist": ("w", REQUIRED),
    "nodes": ("N", REQUIRED),
    "ntasks": ("n", REQUIRED),
    "ntasks-per-core": (None, REQUIRED),
    "ntasks-per-gpu": (None, REQUIRED),
    "ntasks-per-node": (None, REQUIRED),
    "ntasks-per-socket": (None, REQUIRED),
    "open-mode": (None, REQUIRED),
    "output": ("o", REQUIRED),
    "overcommit": ("O", NONE),
    "oversubscribe": ("s", NONE),
    "parsable": (None, NONE),
    "partition": ("p", REQUIRED),
    "power": (None, REQUIRED),
    "prefer": (None, REQUIRED),
    "priority": (None, REQUIRED),
    "profile": (None, REQUIRED),
    "propagate": (None, OPTIONAL),
    "qos": ("q", REQUIRED),
    "quiet": ("Q", NONE),
    "reboot": (None, NONE),
    "requeue": (None, NONE),
    "reservation": (None, REQUIRED),
    "signal": (None, REQUIRED),
    "sockets-per-node": (None, REQUIRED),
    "spread-job": (None, NONE),
    "switches": (None, REQUIRED),
    "test-only": (None, NONE),
    "thread-spec": (None, REQUIRED),
    "threads-per-core": (None, REQUIRED),
    "time": ("t", REQUIRED),
    "time-min": (None, REQUIRED),
    "tmp": (None, REQUIRED),
    "uid": (None, REQUIRED),
    "usage": (None, NONE),
    "use-min-nodes": (None, NONE),
    "verbose": ("v", NONE),
    "version": ("V", NONE),
    "wait": ("W", NONE),
    "wait-all-nodes": (None, REQUIRED),
    "wckey": (None, REQUIRED),
    "wrap": (None, REQUIRED),
}
SHORT_OPTIONS: dict[str, str] = {short: name for name, (short, _) in OPTIONS.items() if short}

MAGIC_WORDS = ("#SBATCH", "#SLURM")


@dataclass(frozen=True)
class Problem:
    """Something wrong with a script, as a sentence for the scientist who wrote it.
    `line` is the script's line number (1-based), None for the hub's own options."""

    line: int | None
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass(frozen=True)
class Directive:
    """One option as sbatch understood it. `option` is the canonical long name
    (``-N2`` becomes ``nodes``); `value` is None for options without an argument."""

    line: int | None
    option: str
    value: str | None
    text: str  # the words as written, for messages

    @property
    def from_script(self) -> bool:
        return self.line is not None


class _Stop(Exception):
    """sbatch stops reading here (fatal error in the script)."""


def tokenize_directive(text: str) -> tuple[list[str], str | None]:
    """Split what follows ``#SBATCH`` into words as sbatch's `_get_argument` does.

    Returns the words and, when sbatch would refuse the line, why.
    """
    words: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] == ":":
            return words, "a directive cannot start with ':'"
        if i >= n:
            return words, None
        chars: list[str] = []
        started = False
        quoted, q_char, escape = False, "", False
        while i < n and (quoted or not text[i].isspace()):
            c = text[i]
            if escape:
                escape = False
            elif c == "\\":
                escape = True
                i += 1
                continue
            elif quoted:
                if c == q_char:
                    quoted = False
                    i += 1
                    continue
            elif c in "\"'":
                quoted, q_char = True, c
                i += 1
                continue
            elif c == "#":
                break
            chars.append(c)
            started = True
            i += 1
        if quoted:
            return words, f"the quote {q_char} is never closed"
        # sbatch returns "no argument" for a word with no characters (an unquoted '#',
        # or an empty pair of quotes), which ends the line: replicate, odd as it is.
        if not started:
            return words, None
        words.append("".join(chars))


def extract_directive_words(script: str) -> tuple[list[tuple[int, str]], list[Problem]]:
    """The words of every directive line, each with its line number, in order."""
    out: list[tuple[int, str]] = []
    problems: list[Problem] = []
    for lineno, line in enumerate(script.split("\n"), start=1):
        magic = next((m for m in MAGIC_WORDS if line.startswith(m)), None)
        if magic is None:
            stripped = line.lstrip()
            if stripped == "" or stripped.startswith("#"):
                continue
            break  # the first command ends the directives
        if magic == "#SLURM":
            problems.append(Problem(lineno, "#SLURM is an old spelling; write #SBATCH instead."))
        lowered = line.lower()
        if "hetjob" in lowered or "packjob" in lowered:
            problems.append(
                Problem(
                    lineno,
                    "Heterogeneous jobs (hetjob) are not supported by the hub; "
                    "submit each component as its own job with a dependency.",
                )
            )
            break
        words, error = tokenize_directive(line[len(magic) :])
        out.extend((lineno, w) for w in words)
        if error:
            problems.append(Problem(lineno, f"sbatch cannot read this line: {error}."))
            break
    return out, problems


def _match_long(name: str) -> tuple[str | None, str | None]:
    """getopt_long's lookup: an exact name, or a prefix of exactly one name."""
    if name in OPTIONS:
        return name, None
    candidates = [o for o in OPTIONS if o.startswith(name)]
    if len(candidates) == 1:
        return candidates[0], None
    if not candidates:
        return None, f"sbatch has no option --{name}"
    shown = ", ".join("--" + c for c in candidates[:4])
    return (
        None,
        f"--{name} is ambiguous; it could mean {shown}. Write the option in full",
    )


def parse_arguments(
    words: Sequence[tuple[int | None, str]],
) -> tuple[list[Directive], list[Problem], list[tuple[int | None, str]]]:
    """getopt_long("+...") over `words`. Returns the directives, the problems and the
    words left over after option processing stopped."""
    directives: list[Directive] = []
    problems: list[Problem] = []
    i = 0
    while i < len(words):
        line, word = words[i]
        if word == "--":
            return directives, problems, list(words[i + 1 :])
        if word.startswith("--"):
            body = word[2:]
            name, eq, value = body.partition("=")
            option, error = _match_long(name)
            if option is None:
                problems.append(Problem(line, f"{error}."))
                i += 1
                continue
            kind = OPTIONS[option][1]
            if kind == NONE:
                if eq:
                    problems.append(Problem(line, f"--{option} does not take a value."))
                directives.append(Directive(line, option, None, word))
                i += 1
            elif eq or kind == OPTIONAL:
                directives.append(Directive(line, option, value if eq else None, word))
                i += 1
            elif i + 1 < len(words):
                directives.append(Directive(line, option, words[i + 1][1], f"{word} {words[i + 1][1]}"))
                i += 2
            else:
                problems.append(Problem(line, f"--{option} needs a value."))
                i += 1
            continue
        if word.startswith("-") and len(word) > 1:
            j = 1
            consumed_next = False
            while j < len(word):
                letter = word[j]
                option = SHORT_OPTIONS.get(letter)
                if option is None:
                    problems.append(Problem(line, f"sbatch has no option -{letter}."))
                    j += 1
                    continue
                kind = OPTIONS[option][1]
                rest = word[j + 1 :]
                if kind == NONE:
                    directives.append(Directive(line, option, None, f"-{letter}"))
                    j += 1
                    continue
                if rest or kind == OPTIONAL:
                    directives.append(Directive(line, option, rest or None, word))
                elif i + 1 < len(words):
                    directives.append(Directive(line, option, words[i + 1][1], f"{word} {words[i + 1][1]}"))
                    consumed_next = True
                else:
                    problems.append(Problem(line, f"-{letter} needs a value."))
                break
            i += 2 if consumed_next else 1
            continue
        # The leading '+' in sbatch's getopt string: the first non-option ends it all.
        return directives, problems, list(words[i:])
    return directives, problems, []


def parse_script(script: str) -> tuple[list[Directive], list[Problem]]:
    """All directives of `script` that sbatch would apply, with line numbers."""
    words, problems = extract_directive_words(script)
    directives, more, leftover = parse_arguments(words)
    problems.extend(more)
    if leftover:
        line, word = leftover[0]
        ignored = sum(1 for w in leftover[1:] if w[1].startswith("-"))
        tail = f" The {ignored} option(s) after it are ignored too." if ignored else ""
        problems.append(
            Problem(
                line,
                f"sbatch stops reading options at `{word}`, which is not an option "
                f"(did you forget a '-' or '--', or quotes around a value with spaces?)." + tail,
            )
        )
    return directives, problems


def parse_command_line(args: Iterable[str]) -> tuple[list[Directive], list[Problem]]:
    """The hub's own sbatch options, as sbatch reads its command line."""
    directives, problems, leftover = parse_arguments([(None, a) for a in args])
    if leftover:
        problems.append(Problem(None, f"Unexpected sbatch argument {leftover[0][1]!r}."))
    return directives, problems


# ---------------------------------------------------------------- value parsers

TIME_HELP = (
    "Slurm understands minutes (90), minutes:seconds (90:00), hours:minutes:seconds "
    "(1:30:00), days-hours (2-0), days-hours:minutes (2-12:30) and "
    "days-hours:minutes:seconds (2-12:30:00)"
)
INFINITE = math.inf


def parse_time_minutes(text: str) -> float | None:
    """Slurm's `time_str2mins`: the wall time in minutes, seconds rounded up, INFINITE for
    'UNLIMITED'/'INFINITE'/'-1', None if Slurm would not accept it."""
    s = text.strip()
    if s.lower() in ("-1", "infinite", "unlimited"):
        return INFINITE
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", s)
    if not m:
        return None
    days, a, b, c = m.groups()
    if days is not None:
        # d-h, d-h:m, d-h:m:s
        seconds = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:
        seconds = int(a) * 3600 + int(b) * 60 + int(c)  # h:m:s
    elif b is not None:
        seconds = int(a) * 60 + int(b)  # m:s
    else:
        seconds = int(a) * 60  # m
    return math.ceil(seconds / 60)


MEM_HELP = "write a whole number with an optional unit K, M, G or T (e.g. 4G or 500M)"


def parse_memory_mb(text: str) -> int | None:
    """Slurm's `str_to_mbytes`: megabytes by default, K rounds up, None if invalid."""
    m = re.fullmatch(r"(\d+)([KkMmGgTt]?)[Bb]?", text.strip())
    if not m:
        return None
    value, unit = int(m.group(1)), m.group(2).upper()
    if unit == "K":
        return (value + 1023) // 1024
    return value * {"": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]


def parse_node_count(text: str) -> tuple[int, int | None] | None:
    """`-N min[-max]` -> (min, max or None)."""
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", text.strip())
    if not m:
        return None
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else None
    if hi is not None and hi < lo:
        return None
    return lo, hi


@dataclass(frozen=True)
class ArraySpec:
    indexes: tuple[int, ...]
    throttle: int | None

    @property
    def count(self) -> int:
        return len(self.indexes)

    @property
    def max_index(self) -> int:
        return max(self.indexes)


def parse_array(text: str) -> ArraySpec | None:
    """`--array`: '0-15', '1,3,5-7', '0-20:4', any of them with '%N' to run N at a time."""
    spec, percent, throttle_text = text.strip().partition("%")
    throttle = None
    if percent:
        if not throttle_text.isdigit():
            return None
        throttle = int(throttle_text)
    indexes: set[int] = set()
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
        if not m:
            return None
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        step = int(m.group(3)) if m.group(3) else 1
        if hi < lo or step < 1:
            return None
        indexes.update(range(lo, hi + 1, step))
    return ArraySpec(tuple(sorted(indexes)), throttle)


def parse_gpu_count(text: str) -> int | None:
    """`--gpus`, `--gpus-per-node`, `--gpus-per-task`: '[type:]count'."""
    count = text.strip().rsplit(":", 1)[-1]
    return int(count) if count.isdigit() else None


def parse_gres_gpus(text: str) -> int | None:
    """GPUs per node in a `--gres` list such as 'gpu:2', 'gpu:a100:2,mps:50', 'gpu'."""
    total = 0
    for entry in text.split(","):
        parts = entry.strip().split(":")
        name = parts[0].split("/")[-1]  # 'gres/gpu' is accepted too
        if name != "gpu":
            continue
        if len(parts) == 1:
            total += 1
        elif parts[-1].isdigit():
            total += int(parts[-1])
        elif len(parts) == 2:  # 'gpu:a100': one GPU of that type
            total += 1
        else:
            return None
    return total


def _positive_int(text: str) -> int | None:
    t = text.strip()
    return int(t) if t.isdigit() and int(t) > 0 else None


# ---------------------------------------------------------------- effective request


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
    mem_per_node_mb: int | None = None
    mem_per_cpu_mb: int | None = None
    mem_per_gpu_mb: int | None = None
    gpus: int = 0
    time_limit_minutes: float | None = None  # math.inf for UNLIMITED
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

    @property
    def nodes(self) -> int:
        """Nodes the job needs at least (Slurm's NumNodes lower bound)."""
        return self.nodes_min or 1

    @property
    def total_cpus(self) -> int:
        """CPUs the job asks for at least: tasks x CPUs per task, one per node at least."""
        return max(self.ntasks * self.cpus_per_task, self.nodes)

    @property
    def total_memory_mb(self) -> int | None:
        """Memory for the whole job, whichever way it was asked (0 = whole nodes)."""
        if self.mem_per_node_mb is not None:
            return self.mem_per_node_mb * self.nodes
        if self.mem_per_cpu_mb is not None:
            return self.mem_per_cpu_mb * self.total_cpus
        if self.mem_per_gpu_mb is not None:
            return self.mem_per_gpu_mb * self.gpus
        return None

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
        where = f"`{d.text}`"
        problems.append(Problem(d.line, f"{where}: {what}."))

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
        elif o == "ntasks":
            n = _positive_int(v)
            if n is None:
                bad(d, "the number of tasks must be a whole number of at least 1")
            else:
                req.ntasks, req.ntasks_set = n, True
        elif o == "ntasks-per-node":
            n = _positive_int(v)
            if n is None:
                bad(d, "tasks per node must be a whole number of at least 1")
            else:
                req.ntasks_per_node = n
        elif o == "cpus-per-task":
            n = _positive_int(v)
            if n is None:
                bad(d, "CPUs per task must be a whole number of at least 1")
            else:
                req.cpus_per_task = n
        elif o in ("mem", "mem-per-cpu", "mem-per-gpu"):
            mb = parse_memory_mb(v)
            if mb is None:
                bad(d, f"'{v}' is not an amount of memory; {MEM_HELP}")
                continue
            for other in ("mem", "mem-per-cpu", "mem-per-gpu"):
                prev = mem_sources.get(other)
                if other != o and prev is not None and prev.from_script == d.from_script:
                    bad(
                        d,
                        f"--{o} cannot be combined with --{other} (line {prev.line}); keep one",
                    )
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
        elif o == "time":
            minutes = parse_time_minutes(v)
            if minutes is None:
                bad(d, f"'{v}' is not a time limit; {TIME_HELP}")
            else:
                req.time_limit_minutes = minutes
        elif o == "array":
            spec = parse_array(v)
            if spec is None:
                bad(
                    d,
                    f"'{v}' is not an array range; write e.g. 0-9, 1,3,5, 0-20:5 "
                    "or 0-99%10 to run at most 10 at a time",
                )
            else:
                req.array = v
                req.array_task_count = spec.count
                req.array_max_index = spec.max_index
                req.array_throttle = spec.throttle
        elif o in ("gpus", "gpus-per-node", "gpus-per-task", "gres"):
            parser = parse_gres_gpus if o == "gres" else parse_gpu_count
            if parser(v) is None:
                bad(d, f"'{v}' is not a GPU request; write e.g. gpu:2 or a100:2")
        elif o == "output":
            req.output = v
        elif o == "error":
            req.error = v
        elif o == "input":
            req.input = v
        elif o == "dependency":
            req.dependency = v
        elif o == "export":
            req.export = v
        elif o == "hold":
            req.hold = True
        elif o == "exclusive":
            req.exclusive = True

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


def effective_request(script: str, hub_args: Sequence[str] = ()) -> tuple[EffectiveRequest, list[Problem]]:
    """Parse `script`, apply the hub's command-line options on top, and resolve."""
    directives, problems = parse_script(script)
    cli, cli_problems = parse_command_line(hub_args)
    problems.extend(cli_problems)
    req = resolve([*directives, *cli], problems)
    return req, problems


# ---------------------------------------------------------------- policy


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
}

SECRET_ENV = re.compile(r"^(AXLE_|MLFLOW_TRACKING_TOKEN$)")


def _resolve_path(path: str, base: str) -> str:
    joined = path if path.startswith("/") else posixpath.join(base, path)
    return posixpath.normpath(joined)


def _inside(path: str, root: str) -> bool:
    root = posixpath.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_against_limits(request: EffectiveRequest, limits: Limits) -> list[Problem]:
    """Everything in `request` that the grant does not allow, one sentence per problem.

    Identity-changing and escaping options are checked only where the script wrote them:
    the hub's own command-line options (line None) are trusted.
    """
    problems: list[Problem] = []
    w = request.winning

    def line_of(option: str) -> int | None:
        d = w.get(option)
        return d.line if d else None

    for d in request.directives:
        if not d.from_script:
            continue
        if d.option in FORBIDDEN:
            problems.append(Problem(d.line, f"`{d.text}` is not allowed: it {FORBIDDEN[d.option]}."))
        elif d.option == "export" and d.value:
            for item in d.value.split(","):
                name = item.split("=", 1)[0].strip()
                if SECRET_ENV.match(name):
                    problems.append(
                        Problem(
                            d.line,
                            f"`--export` names {name}, a variable reserved for the hub's "
                            "secrets; it is never passed to jobs.",
                        )
                    )

    def check_set(option: str, label: str, values: list[str], allowed: frozenset[str] | None) -> None:
        if allowed is None:
            return
        for value in values:
            if value not in allowed:
                choices = ", ".join(sorted(allowed)) or "none"
                problems.append(
                    Problem(
                        line_of(option),
                        f"Your grant does not allow {label} '{value}'; allowed: {choices}.",
                    )
                )

    if request.partition:
        partitions = [p for p in request.partition.split(",") if p]
    elif limits.default_partition:
        partitions = [limits.default_partition]
    else:
        partitions = []
    check_set("partition", "partition", partitions, limits.allowed_partitions)
    if request.account:
        check_set("account", "account", [request.account], limits.allowed_accounts)
    if request.qos:
        check_set("qos", "QoS", [request.qos], limits.allowed_qos)

    def over(option: str, what: str, value: float, limit: int | None, unit: str = "") -> None:
        if limit is not None and value > limit:
            shown = "unlimited" if value == INFINITE else f"{int(value)}{unit}"
            problems.append(
                Problem(
                    line_of(option),
                    f"This job asks for {shown} {what}, more than your grant's limit of {limit}{unit}.",
                )
            )

    over("nodes", "nodes", request.nodes_max or request.nodes, limits.max_nodes)
    cpu_option = next(
        (o for o in ("cpus-per-task", "ntasks", "ntasks-per-node") if o in w),
        "cpus-per-task",
    )
    over(cpu_option, "CPUs", request.total_cpus, limits.max_cpus)
    gpu_option = next(
        (o for o in ("gpus", "gpus-per-node", "gres", "gpus-per-task") if o in w),
        "gpus",
    )
    over(gpu_option, "GPUs", request.gpus, limits.max_gpus)
    mem_option = next((o for o in ("mem", "mem-per-cpu", "mem-per-gpu") if o in w), "mem")
    total_mem = request.total_memory_mb
    if total_mem == 0 and request.mem_per_node_mb == 0 and limits.max_mem_mb is not None:
        problems.append(
            Problem(
                line_of("mem"),
                "--mem=0 asks for all the memory of every node; ask for a fixed amount "
                f"within your grant's limit of {limits.max_mem_mb} MB.",
            )
        )
    elif total_mem is not None:
        over(mem_option, "of memory in total", total_mem, limits.max_mem_mb, " MB")
    if request.time_limit_minutes is not None:
        over(
            "time",
            "of wall time",
            request.time_limit_minutes,
            limits.max_time_minutes,
            " minutes",
        )
    if request.array_task_count is not None:
        over("array", "array tasks", request.array_task_count, limits.max_array_size)

    if limits.job_root:
        base = limits.workdir or limits.job_root
        # Every such directive in the script counts, even one the hub's own --output
        # overrides: a script that tries to write elsewhere is refused, not silently fixed.
        for d in request.directives:
            option = d.option
            if option not in ("output", "error", "input") or not d.from_script or not d.value:
                continue
            if d.value.lower() == "none" or d.value == "/dev/null":
                continue  # sbatch maps "none" to /dev/null
            resolved = _resolve_path(d.value, base)
            if not _inside(resolved, limits.job_root):
                problems.append(
                    Problem(
                        d.line,
                        f"--{option} writes to {resolved}, outside your job folder "
                        f"{limits.job_root}; use a path inside it (relative paths are fine).",
                    )
                )
    return problems
