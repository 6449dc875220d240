"""Before you submit: the grant's limits, Slurm's own answer to "when would this start?"
(`sbatch --test-only` as the grant's account) and the account's fair-share (`sshare`),
without submitting anything.

Asked on demand from the job and sweep forms. It reads only, talks to the cluster with no
database transaction open, and turns every failure into a sentence: the form shows it
beside the editor, never a stack trace."""

from __future__ import annotations

from dataclasses import dataclass, field

from apps.clusters.models import Cluster, ClusterGrant
from apps.clusters.selectors import grant_for_submission
from apps.clusters.transport import slurm_client
from apps.integrations.slurm.base import (
    FairShare,
    SlurmError,
    SlurmRejected,
    StartEstimate,
    SubmitRequest,
    UnsupportedOperation,
)

from . import validation


@dataclass
class Preflight:
    cluster: str
    grant: ClusterGrant | None = None
    limits: list[tuple[str, str]] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)  # the hub's own check of the script
    estimate: StartEstimate | None = None
    estimate_error: str = ""
    shares: list[FairShare] = field(default_factory=list)
    shares_error: str = ""
    account: str = ""  # the cluster account it was asked as


def _sentence(exc: SlurmError, what: str) -> str:
    if isinstance(exc, UnsupportedOperation):
        return str(exc)
    if isinstance(exc, SlurmRejected):
        return f"Slurm would refuse this job: {str(exc).strip()}"
    return f"Could not ask the cluster for {what}: {exc}"


def job_preflight(*, user, cluster: Cluster, script: str, parameters=None, name: str = "") -> Preflight:
    """What Slurm would say about ``script`` on ``cluster`` for ``user``, nothing submitted."""
    result = Preflight(cluster=cluster.name)
    grant = grant_for_submission(user=user, cluster=cluster)
    if grant is None:
        result.problems = [{"line": None, "message": f"You have no active grant on cluster {cluster.name}."}]
        return result
    result.grant, result.limits, result.account = grant, grant.limit_rows(), grant.cluster_username
    checked = validation.validate(
        script=script, grant=grant, workdir=f"{grant.job_root}/preflight", parameters=parameters, name=name or None
    )
    result.problems = checked.problems
    try:
        with slurm_client(grant) as slurm:
            if checked.ok:
                request = SubmitRequest(
                    script=script,
                    job_name=name or "axle-preflight",
                    comment="",
                    workdir="",
                    env=checked.parameters,
                    extra_args=list(checked.hub_args),
                )
                try:
                    result.estimate = slurm.test_only(request)
                except SlurmError as exc:
                    result.estimate_error = _sentence(exc, "a start estimate")
            else:
                result.estimate_error = (
                    "Fix the problems above first: Slurm is asked only about a script the grant allows."
                )
            try:
                result.shares = slurm.fairshare()
            except SlurmError as exc:
                result.shares_error = _sentence(exc, "your fair-share")
    except SlurmError as exc:  # the connection itself
        message = f"Could not reach cluster {cluster.name}: {exc}"
        result.estimate_error = result.estimate_error or message
        result.shares_error = message
    return result
