"""Reading the pipeline's repository as the grant's cluster account sees it.

Runs in the worker with no database transaction open. The repository is fetched into a bare
cache below the grant's job root (one per pipeline), so reading a run's files costs one round
trip, and every read is of blobs at a commit, never of a working tree. User-supplied values
(the URL, the branch, the paths) are positional arguments of a fixed shell text, never part
of it."""

from __future__ import annotations

from apps.integrations.slurm.base import ClusterFiles, UnsupportedOperation
from apps.jobs.inputs import SHA, InputError, resolve_commit

# $1 cache folder, $2 repository, $3 commit; stdin: one "<commit>:<path>" per line.
# Fetches the commit only when the cache does not have it yet.
_READ = r"""
set -eu
cache=$1; repo=$2; commit=$3
if [ ! -d "$cache/objects" ]; then
  mkdir -p "$cache"
  git init --quiet --bare "$cache" >/dev/null
fi
if ! git --git-dir="$cache" cat-file -e "$commit^{commit}" 2>/dev/null; then
  git --git-dir="$cache" fetch --quiet --no-tags -- "$repo" "+refs/heads/*:refs/heads/*" "+refs/tags/*:refs/tags/*" >&2
  if ! git --git-dir="$cache" cat-file -e "$commit^{commit}" 2>/dev/null; then
    git --git-dir="$cache" fetch --quiet --no-tags -- "$repo" "$commit" >&2 || true
  fi
  if ! git --git-dir="$cache" cat-file -e "$commit^{commit}" 2>/dev/null; then
    echo "no commit $commit in $repo" >&2; exit 3
  fi
fi
exec git --git-dir="$cache" cat-file --batch
"""


def cache_folder(job_root: str, pipeline_uuid) -> str:
    return f"{job_root.rstrip('/')}/.axle-pipelines/{pipeline_uuid}.git"


def head(files: ClusterFiles, repo: str, branch: str) -> str:
    """The commit the branch points at now."""
    return resolve_commit(files, repo, branch)


def read_at(files: ClusterFiles, *, cache: str, repo: str, commit: str, paths: list[str]) -> dict[str, bytes | None]:
    """The content of each path at ``commit`` (None for a path that is not a file there)."""
    if not SHA.match(commit):
        raise InputError(f"{commit!r} is not a full commit SHA.")
    for p in paths:
        if "\n" in p or "\0" in p:
            raise InputError(f"{p!r}: a path with a line break cannot be read.")
    stdin = "".join(f"{commit}:{p}\n" for p in paths).encode("utf-8", "surrogateescape")
    try:
        result = files.run(["sh", "-c", _READ, "sh", cache, repo, commit], stdin=stdin, timeout=120)
    except UnsupportedOperation as exc:
        raise InputError(exc.message) from None
    if result.exit_status != 0:
        raise InputError(f"git could not read {repo} at {commit[:12]} from the cluster: {result.err.strip()}")
    return _parse_batch(result.stdout, paths)


def _parse_batch(out: bytes, paths: list[str]) -> dict[str, bytes | None]:
    """``git cat-file --batch``: ``<sha> <type> <size>\\n<content>\\n``, or ``<name> missing``."""
    found: dict[str, bytes | None] = {}
    pos = 0
    for p in paths:
        end = out.index(b"\n", pos)
        header = out[pos:end].decode("utf-8", "surrogateescape")
        pos = end + 1
        parts = header.rsplit(" ", 2)
        if header.endswith(" missing") or header.endswith(" ambiguous") or len(parts) != 3:
            found[p] = None
            continue
        _sha, kind, size = parts
        n = int(size)
        content = out[pos : pos + n]
        pos += n + 1
        found[p] = content if kind == "blob" else None
    return found
