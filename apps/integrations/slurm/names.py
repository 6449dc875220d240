"""The one rule for text the hub hands to Slurm that is not a job's free text: control
characters (which break Slurm's one-line outputs) and the names an administrator chooses
(cluster usernames, accounts, partitions, QOS), which end up in `--user=`, `where name=`
and `-p` lists where a ',' or '=' would widen what they select. Pure functions."""

from __future__ import annotations

import re

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]*\Z")
MAX_NAME = 64


def has_control_characters(text: str) -> bool:
    """Newline, tab, NUL, ESC and the like: they break Slurm's one-line outputs."""
    return bool(CONTROL.search(text))


def name_problem(value: str, what: str) -> str | None:
    """Why `value` is not a plain Slurm or Unix name, as a sentence about `what`; None if it is."""
    if not value or len(value) > MAX_NAME or not _NAME.match(value):
        return (
            f"{what} {value!r} is not a plain name: use letters, digits, '_', '.', '@' and '-' "
            f"(not first), at most {MAX_NAME} characters, no spaces or commas."
        )
    return None


def check_name(value: str, what: str) -> str:
    """`value` if it is a plain name, else ValueError with the sentence."""
    if problem := name_problem(value, what):
        raise ValueError(problem)
    return value
