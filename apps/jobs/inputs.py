"""Resolving and preparing a job's recorded inputs on the cluster, just before sbatch.

Runs in the worker with no database transaction open. Everything here talks to the cluster
through the grant's own account (`client.files`), so it sees exactly what the job will see."""

import re
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

from apps.integrations.slurm.base import ClusterFiles, RemoteCommandFailed, RemoteFileMissing, UnsupportedOperation

SHA = re.compile(r"^[0-9a-f]{40}$")
F = TypeVar("F", bound=Callable)


class InputError(Exception):
    """An input cannot be resolved (a ref that does not exist, an image that is gone): the
    job fails with this sentence, since retrying would not change it."""


def _refusals_are_input_errors(fn: F) -> F:
    # A grant whose transport cannot reach files (REST without an SSH key) cannot resolve
    # inputs at all: the job fails with the sentence saying what the grant lacks.
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UnsupportedOperation as exc:
            raise InputError(exc.message) from None

    return wrapper  # type: ignore[return-value]


@_refusals_are_input_errors
def resolve_commit(files: ClusterFiles, repo: str, ref: str) -> str:
    """The commit SHA ``ref`` names in ``repo``, as the cluster account sees the repository."""
    ref = ref.strip() or "HEAD"
    if SHA.match(ref):
        return ref
    result = files.run(["git", "ls-remote", "--", repo, ref], timeout=60)
    if result.exit_status != 0:
        raise InputError(f"git could not read {repo} from the cluster: {result.err.strip() or result.exit_status}")
    for line in result.out.splitlines():
        sha, _, name = line.partition("\t")
        if SHA.match(sha) and name in (ref, f"refs/heads/{ref}", f"refs/tags/{ref}", "HEAD"):
            return sha
    raise InputError(f"{repo} has no branch or tag named {ref!r}.")


@_refusals_are_input_errors
def image_digest(files: ClusterFiles, path: str) -> str:
    """sha256 of the container image file, computed on the cluster."""
    try:
        return f"sha256:{files.sha256(path, timeout=600)}"
    except RemoteFileMissing:
        raise InputError(
            f"The image {path} does not exist on the cluster or is not readable by the job's account."
        ) from None
    except RemoteCommandFailed as exc:
        raise InputError(f"Could not compute the digest of {path}: {exc.message}") from None


@_refusals_are_input_errors
def write_files(files: ClusterFiles, root: str, contents: dict[str, bytes]) -> None:
    """Write small files (and folders, for names ending in /) below ``root`` on the cluster
    as the job's account."""
    for relative, data in contents.items():
        path = f"{root.rstrip('/')}/{relative}"
        if relative.endswith("/"):  # an empty folder the store expects to exist
            files.mkdir(path)
        else:
            files.write(path, data)
