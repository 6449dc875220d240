"""Slurm enforces the grant too (issue 9, finding 7), against the real local cluster.

The grant's cluster account is `approver`, which no other test submits as, and every
association and QOS written here is put back as it was afterwards: the stack is shared."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from apps.audit.models import AuditEvent
from apps.clusters import enforcement, services
from apps.clusters.transport import slurm_client
from apps.integrations.slurm.base import SlurmRejected, SubmitRequest
from tests.factories import UserFactory
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant

pytestmark = [pytest.mark.django_db, pytest.mark.slurm, pytest.mark.slow]

USER = "approver"


def sacctmgr(env: dict[str, str], *args: str) -> str:
    run_env = {**os.environ, "SLURM_CONF": env["AXLE_LOCAL_SLURM_CONF"]}
    result = subprocess.run(
        ["sacctmgr", *args], env=run_env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    return result.stdout


def associations(env: dict[str, str]) -> list[str]:
    fields = "Account,User,Partition,MaxWall,MaxTRES,MaxJobs,MaxSubmit"
    return sorted(sacctmgr(env, "-nP", "show", "assoc", "where", f"users={USER}", f"format={fields}").split())


@pytest.fixture
def local_env():
    env = local_cluster_env()
    if env is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    return env


@pytest.fixture
def restored(local_env):
    """Put approver's associations and the QOS list back as they were, whatever happened."""
    before = associations(local_env)
    assert before, "approver has no association on the local cluster"
    yield local_env
    slurm_env = {**os.environ, "SLURM_CONF": local_env["AXLE_LOCAL_SLURM_CONF"]}
    subprocess.run(["scancel", "-u", USER], env=slurm_env, check=True)
    for _ in range(60):  # sacctmgr refuses to delete an association its jobs still use
        if not subprocess.run(["squeue", "-h", "-u", USER], env=slurm_env, capture_output=True, text=True).stdout:
            break
        time.sleep(1)
    for line in associations(local_env):
        account, _user, partition, *_ = line.split("|")
        if partition:
            sacctmgr(local_env, "-i", "delete", "user", "where", f"name={USER}", f"account={account}",
                     f"partition={partition}")  # fmt: skip
        else:
            unlimited = ["MaxWall=-1", "MaxTRES=cpu=-1,mem=-1,node=-1", "MaxJobs=-1", "MaxSubmitJobs=-1"]
            where = [f"name={USER}", f"account={account}", "partition="]
            sacctmgr(local_env, "-i", "modify", "user", "where", *where, "set", *unlimited)
    assert associations(local_env) == before


@pytest.fixture
def enforced(restored, alice):
    cluster = make_local_cluster("ssh", f"local-enforce-{uuid.uuid4().hex[:6]}")
    operator = make_local_grant(cluster, UserFactory(username="ops"), cluster_username="admin")
    enforcement.cluster_set_operator(cluster=cluster, grant=operator, actor=None)
    grant = make_local_grant(
        cluster,
        alice,
        cluster_username=USER,
        allowed_partitions=["debug"],
        max_cpus=1,
        max_mem_mb=2048,
        max_time_minutes=10,
        max_active_jobs=3,
    )
    return cluster, grant


def wait_done(client, job_id: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = client.accounting([job_id])
        if jobs and jobs[0].state in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}:
            return jobs[0].state
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not finish")


INSIDE = """#!/bin/bash
#SBATCH -p debug -t 5 -c 1 --mem=1G
/usr/bin/sbatch -p batch -t 600 -o /dev/null --wrap=true 2>/dev/null; echo "batch=$?"
/usr/bin/sbatch -A research -p debug -t 5 -o /dev/null --wrap=true 2>/dev/null; echo "account=$?"
/usr/bin/sbatch --parsable -p debug -t 30 -o /dev/null --wrap=true
"""


def test_a_job_that_calls_sbatch_beyond_its_grant_is_refused_by_slurm(enforced):
    cluster, grant = enforced
    report = enforcement.cluster_enforce_grants(cluster.pk)
    assert report["users"][USER]["corrected"] and report["users"][USER]["drift"], report
    assert AuditEvent.objects.filter(action="grant.enforced", subject_id=str(grant.uuid)).exists()
    assert enforcement.cluster_enforce_grants(cluster.pk)["users"][USER]["drift"] == []  # in sync now

    with slurm_client(grant) as client:
        folder = f"{grant.job_root}/enforce-{uuid.uuid4().hex[:6]}"
        assert client.run(["mkdir", "-p", folder]).exit_status == 0
        job_id = client.submit(
            SubmitRequest(script=INSIDE, job_name="inside", comment="", workdir=folder,
                          extra_args=[f"--output={folder}/inside.out"])
        )  # fmt: skip
        assert wait_done(client, job_id) == "COMPLETED"  # within the grant: it runs
        log, _ = client.files.read(f"{folder}/inside.out")
        batch, account, held = log.decode().split()
        # another partition or account: refused at submission (sbatch exits 1)
        assert (batch, account) == ("batch=1", "account=1"), log
        # within the partition but beyond the grant's time: Slurm holds it, it never runs
        reason = ""
        for _ in range(30):
            [job] = [j for j in client.queue(USER) if j.job_id == held]
            if (reason := job.reason).startswith("AssocMax"):
                break
            time.sleep(1)
        assert (job.state, reason) == ("PENDING", "AssocMaxWallDurationPerJobLimit")
        # and what the hub itself would send past its own validation
        with pytest.raises(SlurmRejected, match="AssocMaxSubmitJobLimit"):
            client.submit(SubmitRequest(script="#!/bin/bash\n#SBATCH -p batch\ntrue\n", job_name="x", comment="",
                                        workdir=folder, extra_args=["--output=/dev/null"]))  # fmt: skip


def test_drift_is_shown_and_corrected_and_an_ended_grant_closes_the_account(enforced):
    cluster, grant = enforced
    env = local_cluster_env()
    enforcement.cluster_enforce_grants(cluster.pk)
    sacctmgr(env, "-i", "modify", "user", "where", f"name={USER}", "partition=debug", "set", "MaxWall=600")
    report = enforcement.cluster_enforce_grants(cluster.pk)
    assert report["users"][USER]["drift"] == ["vision/debug: MaxWall is 10:00:00, not 00:10:00"]
    cluster.refresh_from_db()
    assert cluster.enforcement["users"][USER]["corrected"] is True
    assert associations(env) == ["vision|approver|debug|00:10:00|cpu=1,mem=2G|3|3", "vision|approver|||||0"]

    services.grant_update_limits(grant=grant, actor=None, max_time_minutes=20)
    assert enforcement.cluster_enforce_grants(cluster.pk)["users"][USER]["drift"] == [
        "vision/debug: MaxWall is 00:10:00, not 00:20:00"
    ]

    services.grant_revoke(grant=grant, actor=None)
    report = enforcement.cluster_enforce_grants(cluster.pk)
    assert report["users"][USER]["desired"] == "no submissions"
    assert associations(env) == ["vision|approver|debug||||0", "vision|approver|||||0"]


CLOSED_BY_THE_HUB = ["vision|approver|debug||||0", "vision|approver|||||0"]


@pytest.mark.parametrize("how", ["renamed", "deleted", "cluster out of service"])
def test_a_username_that_drops_out_of_the_grants_is_closed_in_slurm(enforced, how):
    cluster, grant = enforced
    env = local_cluster_env()
    enforcement.cluster_enforce_grants(cluster.pk)
    assert associations(env) == ["vision|approver|debug|00:10:00|cpu=1,mem=2G|3|3", "vision|approver|||||0"]
    if how == "renamed":
        services.grant_update_limits(grant=grant, actor=None, cluster_username="nobody_axle")
    elif how == "deleted":
        grant.delete()
    else:
        services.cluster_update(cluster=cluster, actor=None, is_active=False)
    report = enforcement.cluster_enforce_grants(cluster.pk)
    assert report["users"][USER]["desired"] == "no submissions" and USER in report["managed"], report
    assert associations(env) == CLOSED_BY_THE_HUB


def test_one_bad_username_does_not_stop_enforcement_for_the_others(enforced, bob):
    from apps.clusters.models import ClusterGrant
    from tests.factories import ClusterGrantFactory

    cluster, grant = enforced
    bad = ClusterGrantFactory(user=bob, cluster=cluster, cluster_username="x")
    ClusterGrant.objects.filter(pk=bad.pk).update(cluster_username="approver,scientist")  # stored before the rule
    report = enforcement.cluster_enforce_grants(cluster.pk)
    assert "not a plain name" in report["users"]["approver,scientist"]["error"]
    assert report["users"][USER]["corrected"] and "error" not in report, report
    assert associations(local_cluster_env())[0] == "vision|approver|debug|00:10:00|cpu=1,mem=2G|3|3"


def test_blank_partitions_open_the_default_partition_only_in_slurm(enforced):
    cluster, grant = enforced
    services.grant_update_limits(grant=grant, actor=None, allowed_partitions=[])
    enforcement.cluster_enforce_grants(cluster.pk)
    assert associations(local_cluster_env()) == [
        "vision|approver|debug|00:10:00|cpu=1,mem=2G|3|3",
        "vision|approver|||||0",
    ]
