"""What the hub runs on a cluster to measure a dataset, and pure functions that read the answers.

Both scripts run under /bin/sh (not the account's login shell) with the dataset path as the
positional argument ``$1``: the path is never part of the script text, so no name can turn
into shell syntax. GNU find and coreutils are assumed, as on every Linux cluster.

The checksum of a version is the sha256 of its manifest, which is exactly what

    cd DIR && find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum -- | sha256sum

prints on the cluster, so anyone can check a version by hand without Axle."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# Exit codes our scripts use for "not there" and "there but not for you".
MISSING = 44
UNREADABLE = 45
NOT_A_FILE = 46

# First line says whether $1 was a directory (D) or a single file (F); then one
# "<size> <relative path>" record per regular file, NUL-terminated so any name survives.
# Symbolic links inside a directory are not followed (find's default): a link out of the
# dataset would make its content depend on something else.
LIST_SCRIPT = f"""p=$1
test -e "$p" || exit {MISSING}
if test -d "$p"; then
  test -r "$p" && test -x "$p" && cd -- "$p" || exit {UNREADABLE}
  printf 'D\\0'
  exec find . -type f -printf '%s %P\\0'
fi
test -f "$p" || exit {NOT_A_FILE}
test -r "$p" || exit {UNREADABLE}
printf 'F\\0'
exec find "$p" -maxdepth 0 -printf '%s %f\\0'
"""

# Hash the NUL-separated relative names on stdin, in that order, from inside the base folder.
HASH_SCRIPT = f"""cd -- "$1" || exit {UNREADABLE}
exec xargs -0 -r sha256sum --
"""


@dataclass(frozen=True)
class Listing:
    is_dir: bool
    files: list[tuple[bytes, int]]  # (relative name, size), sorted by name bytes

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


class ListingUnreadable(ValueError):
    pass


def parse_listing(out: bytes) -> Listing:
    records = out.split(b"\0")
    if not records or records[0] not in (b"D", b"F"):
        raise ListingUnreadable(f"unexpected answer from find: {out[:80]!r}")
    files = []
    for record in records[1:]:
        if not record:
            continue
        size, sep, name = record.partition(b" ")
        if not sep or not size.isdigit() or not name:
            raise ListingUnreadable(f"unexpected record from find: {record[:80]!r}")
        files.append((name, int(size)))
    # LC_ALL=C sort -z orders by bytes, and so do Python's bytes.
    files.sort()
    return Listing(is_dir=records[0] == b"D", files=files)


def parse_sha256sum(out: bytes, expected: int) -> list[bytes]:
    """sha256sum's lines for ``expected`` files, kept byte for byte: they are the manifest.

    A name with a newline or backslash gets an escaped line starting with a backslash, so the
    output still has exactly one line per file."""
    lines = out.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if len(lines) != expected:
        raise ValueError(f"sha256sum printed {len(lines)} lines for {expected} files")
    for line in lines:
        digest = line.removeprefix(b"\\")[:64]
        if len(digest) != 64 or line.removeprefix(b"\\")[64:66] != b"  ":
            raise ValueError(f"unexpected sha256sum line: {line[:100]!r}")
    return lines


def manifest_checksum(lines: list[bytes]) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line + b"\n")
    return digest.hexdigest()


def manifest_names(lines: list[bytes]) -> dict[str, str]:
    """{relative name: sha256} from manifest lines (names as they appear in the manifest)."""
    result = {}
    for line in lines:
        plain = line.removeprefix(b"\\")
        result[plain[66:].decode("utf-8", "replace")] = plain[:64].decode()
    return result
