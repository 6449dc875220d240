"""What a repository's branches point at, as the grant's cluster account sees it: one
``git ls-remote`` on the cluster's login node, run as that account through its
``ClusterFiles.run`` (every word quoted, the URL after ``--``). Never inside a transaction."""

from __future__ import annotations

from collections.abc import Sequence

from apps.clusters.models import ClusterGrant
from apps.clusters.transport import slurm_client
from apps.integrations.slurm.base import SlurmError
from apps.jobs.inputs import SHA

TIMEOUT = 60


class RemoteError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def ls_remote_argv(repo: str, branches: Sequence[str]) -> list[str]:
    # Full ref names as patterns: git matches them against the end of each ref, and the
    # answer is filtered on the exact name below. ext:: (a URL that runs a command) is refused
    # outright, although it could only run as the account itself.
    return [
        "git",
        "-c",
        "protocol.ext.allow=never",
        "ls-remote",
        "--heads",
        "--",
        repo,
        *(f"refs/heads/{b}" for b in branches),
    ]


def parse_heads(out: str, branches: Sequence[str]) -> dict[str, str]:
    wanted = {f"refs/heads/{b}": b for b in branches}
    heads = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if name in wanted and SHA.match(sha):
            heads[wanted[name]] = sha
    return heads


def branch_heads(*, grant: ClusterGrant, repo: str, branches: Sequence[str]) -> dict[str, str]:
    """{branch: commit} for those of ``branches`` that exist in ``repo``."""
    if not grant.is_usable:
        raise RemoteError(f"The grant for {grant.cluster_username} on {grant.cluster.name} is not usable.")
    try:
        with slurm_client(grant) as client:
            result = client.files.run(ls_remote_argv(repo, branches), timeout=TIMEOUT)
    except SlurmError as exc:
        raise RemoteError(f"Could not reach {grant.cluster.name}: {exc.message}") from None
    if result.exit_status != 0:
        detail = "; ".join(result.err.strip().splitlines()[:3]) or f"exit status {result.exit_status}"
        raise RemoteError(f"git ls-remote {repo} failed as {grant.cluster_username}: {detail}")
    return parse_heads(result.out, branches)
