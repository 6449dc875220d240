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

import functools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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

    def as_list(self) -> list:
        """Plain JSON values, so validated directives can be recorded and travel to Slurm."""
        return [self.line, self.option, self.value, self.text]

    @classmethod
    def from_list(cls, values: Sequence) -> Directive:
        line, option, value, text = values
        return cls(line, option, value, text)


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


# The first command: a line whose first non-blank character is not '#'. Before it come
# blank lines and lines starting with '#' (comments, the shebang, the directives).
_FIRST_COMMAND = re.compile(r"^[^\S\n]*[^\s#]", re.MULTILINE)
_DIRECTIVE_LINE = re.compile(r"^#(?:SBATCH|SLURM)[^\n]*", re.MULTILINE)
# Real scripts hold well under 1 KiB of directives. A bound keeps reading them (and every
# list in them) cheap whatever a script holds: the regular expressions above skip the rest
# of the script in C, and only directive lines reach Python, at most this much of them.
MAX_DIRECTIVE_CHARS = 16 * 1024
MAX_PROBLEMS = 50  # a script with more is read no further: the first ones say enough
STOPPED = f"More than {MAX_PROBLEMS} problems: the hub stopped reading"


def extract_directive_words(script: str) -> tuple[list[tuple[int, str]], list[Problem]]:
    """The words of every directive line, each with its line number, in order."""
    out: list[tuple[int, str]] = []
    problems: list[Problem] = []
    first_command = _FIRST_COMMAND.search(script)
    header = script[: first_command.start() if first_command else len(script)]
    lineno, counted_to, total = 1, 0, 0
    for m in _DIRECTIVE_LINE.finditer(header):
        lineno += header.count("\n", counted_to, m.start())
        counted_to = m.start()
        line = m.group()
        total += len(line)
        if total > MAX_DIRECTIVE_CHARS:
            problems.append(
                Problem(
                    lineno,
                    f"The #SBATCH lines of this script hold more than {MAX_DIRECTIVE_CHARS // 1024} KiB of "
                    "options; the hub reads no further. Put long lists (array indexes, node names) in ranges.",
                )
            )
            break
        magic = "#SLURM" if line.startswith("#SLURM") else "#SBATCH"
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


@functools.lru_cache(maxsize=512)
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
        if len(problems) >= MAX_PROBLEMS:
            problems.append(Problem(line, f"{STOPPED} here."))
            return directives, problems, []
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


# Slurm refuses MaxArraySize above 4000001, so no array index can exceed 4000000: a bound
# that keeps counting cheap whatever the spec says.
MAX_ARRAY_INDEX = 4_000_000
# Overlapping ranges are counted index by index; a spec listing more than this many
# indexes with overlaps is refused rather than counted (no real array comes close).
MAX_OVERLAPPING_INDEXES = 1_000_000


@dataclass(frozen=True)
class ArraySpec:
    """An array spec, counted without building its indexes (a spec like 0-999999999
    must cost as little as 0-9)."""

    count: int
    max_index: int
    throttle: int | None


def _array_ranges(spec: str) -> list[tuple[int, int, int]] | None:
    ranges = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d{1,12})(?:-(\d{1,12})(?::(\d{1,12}))?)?", part)
        if not m:
            return None
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        step = int(m.group(3)) if m.group(3) else 1
        if hi < lo or step < 1:
            return None
        hi -= (hi - lo) % step  # the last index actually in the range
        ranges.append((lo, hi, step))
    return ranges


def parse_array(text: str) -> ArraySpec | None:
    """`--array`: '0-15', '1,3,5-7', '0-20:4', any of them with '%N' to run N at a time.
    None if Slurm would not read it, an index is beyond any Slurm's MaxArraySize, or
    overlapping ranges list more than MAX_OVERLAPPING_INDEXES indexes."""
    spec, percent, throttle_text = text.strip().partition("%")
    throttle = None
    if percent:
        if not throttle_text.isdigit() or len(throttle_text) > 12:
            return None
        throttle = int(throttle_text)
    ranges = _array_ranges(spec)
    if ranges is None:
        return None
    max_index = max(hi for _, hi, _ in ranges)
    if max_index > MAX_ARRAY_INDEX:
        return None
    ranges.sort()
    sizes = sum((hi - lo) // step + 1 for lo, hi, step in ranges)
    if all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False)):
        count = sizes  # disjoint ranges (the usual case): the count is arithmetic
    elif sizes > MAX_OVERLAPPING_INDEXES:
        return None
    else:
        # overlapping ranges count once, as in Slurm's bitmap: a byte per index, at most
        # 4 MB, and at most MAX_OVERLAPPING_INDEXES bytes written
        seen = bytearray(max_index + 1)
        for lo, hi, step in ranges:
            n = (hi - lo) // step + 1
            if step == 1:
                seen[lo : hi + 1] = b"\x01" * n
            else:
                seen[lo : hi + 1 : step] = b"\x01" * n
        count = seen.count(1)
    return ArraySpec(count, max_index, throttle)


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


def positive_int(text: str) -> int | None:
    t = text.strip()
    return int(t) if t.isdigit() and int(t) > 0 else None
