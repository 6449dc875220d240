"""Resolving and preparing a job's recorded inputs on the cluster, just before sbatch.

Runs in the worker with no database transaction open. Everything here talks to the cluster
through the grant's own account, so it sees exactly what the job will see."""

import re

from apps.integrations.slurm.base import TransportError
from apps.integrations.slurm.ssh import SSHClient

SHA = re.compile(r"^[0-9a-f]{40}$")


class InputError(Exception):
    """An input cannot be resolved (a ref that does not exist, an image that is gone): the
    job fails with this sentence, since retrying would not change it."""


def _need_ssh(files: SSHClient | None, what: str) -> SSHClient:
    if files is None:
        raise InputError(f"Resolving {what} needs an SSH login on the cluster, and this grant has no SSH key.")
    return files


def resolve_commit(files: SSHClient | None, repo: str, ref: str) -> str:
    """The commit SHA ``ref`` names in ``repo``, as the cluster account sees the repository."""
    ref = ref.strip() or "HEAD"
    if SHA.match(ref):
        return ref
    result = _need_ssh(files, "a git ref").run(["git", "ls-remote", "--", repo, ref], timeout=60)
    if result.exit_status != 0:
        raise InputError(f"git could not read {repo} from the cluster: {result.err.strip() or result.exit_status}")
    for line in result.out.splitlines():
        sha, _, name = line.partition("\t")
        if SHA.match(sha) and name in (ref, f"refs/heads/{ref}", f"refs/tags/{ref}", "HEAD"):
            return sha
    raise InputError(f"{repo} has no branch or tag named {ref!r}.")


def image_digest(files: SSHClient | None, path: str) -> str:
    """sha256 of the container image file on the cluster."""
    result = _need_ssh(files, "a container image").run(["sha256sum", "--", path], timeout=600)
    if result.exit_status != 0:
        raise InputError(f"The image {path} does not exist on the cluster or is not readable by the job's account.")
    digest = result.out.split()[0] if result.out.split() else ""
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise InputError(f"Could not compute the digest of {path}: {result.out.strip()[:200]}")
    return f"sha256:{digest}"


def write_files(files: SSHClient | None, root: str, contents: dict[str, bytes]) -> None:
    """Write small files (and folders, for names ending in /) below ``root`` on the cluster
    as the job's account."""
    files = _need_ssh(files, "the file-based tracking store")
    for relative, data in contents.items():
        path = f"{root.rstrip('/')}/{relative}"
        if relative.endswith("/"):  # an empty folder the store expects to exist
            result = files.run(["mkdir", "-p", "--", path])
            if result.exit_status != 0:
                raise TransportError(f"Could not create {path} on the cluster: {result.err.strip()}", permanent=False)
            continue
        folder = path.rsplit("/", 1)[0]
        script = 'mkdir -p -- "$1" && cat > "$2"'
        result = files.run(["/bin/sh", "-c", script, "sh", folder, path], stdin=data)
        if result.exit_status != 0:
            raise TransportError(f"Could not write {path} on the cluster: {result.err.strip()}", permanent=False)
