"""Usage from Slurm's accounting, on the real cluster over both transports: the figures the
hub stores are sacct's own (allocated TRES × ElapsedRaw), read in one call per cluster and
window, and only the hub's jobs unless the administrator opted in to every job."""

import io
import re
import time

import pytest
from django.core.management import call_command

from apps.clusters.models import Cluster
from apps.clusters.transport import slurm_client
from apps.jobs import services
from apps.jobs.models import Job
from apps.usage import services as usage_services
from apps.usage.models import UsageCollection, UsageRecord
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture
def env():
    found = local_cluster_env()
    if found is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    return found


def _script(*directives: str, body: str) -> str:
    lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in directives), body, ""]
    return "\n".join(lines)


def _run(grant, name: str, script: str) -> Job:
    job = services.job_create(user=grant.user, cluster=grant.cluster, name=name, script=script)
    services.job_submit(job_id=job.pk)
    job.refresh_from_db()
    assert job.slurm_job_id, (job.status, job.failure_message, job.last_error)
    return job


def _wait_all(jobs: list[Job], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        services.jobs_poll()
        for job in jobs:
            job.refresh_from_db()
        if all(j.status in Job.TERMINAL for j in jobs):
            return
        time.sleep(1)
    raise AssertionError([(j.name, j.status) for j in jobs])


def _sacct(grant, ids: list[str], timeout: float = 60) -> dict[str, dict[str, str]]:
    """sacct's own rows for these jobs (array ids bring their tasks), read without the hub's
    parser, once slurmdbd has recorded every one of them ended."""
    deadline = time.monotonic() + timeout
    while True:
        with slurm_client(grant) as client:
            out = client.files.run(
                [
                    "sacct",
                    "--noheader",
                    "--parsable2",
                    "--allocations",
                    "--jobs=" + ",".join(ids),
                    "--format=JobIDRaw,JobID,State,ElapsedRaw,AllocTRES,End",
                ]
            )
        assert out.exit_status == 0, out.err
        rows = {}
        for line in out.out.splitlines():
            raw, jobid, state, elapsed, tres, end = line.split("|")
            rows[raw] = {"jobid": jobid, "state": state, "elapsed": elapsed, "tres": tres, "end": end}
        if rows and all(
            r["end"] not in ("Unknown", "") and not r["state"].startswith(("RUNNING", "PENDING")) for r in rows.values()
        ):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(rows)
        time.sleep(1)


def _mb(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", text)
    factor = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2)]
    return int(float(m.group(1)) * factor)


def _expected(row: dict[str, str]) -> dict[str, int]:
    tres = dict(item.split("=", 1) for item in row["tres"].split(",") if "=" in item)
    elapsed = int(row["elapsed"])
    cpus, gpus, mem = int(tres.get("cpu", 0)), int(tres.get("gres/gpu", 0)), _mb(tres.get("mem", "0"))
    return {
        "elapsed_seconds": elapsed,
        "cpus": cpus,
        "gpus": gpus,
        "mem_mb": mem,
        "cpu_seconds": cpus * elapsed,
        "gpu_seconds": gpus * elapsed,
        "mem_mb_seconds": mem * elapsed,
    }


@pytest.mark.parametrize("transport", ["ssh", "rest"])
def test_usage_of_the_hubs_jobs_matches_sacct_exactly(env, alice, bob, team, transport):
    cluster = make_local_cluster(transport, f"usage-{transport}")
    grant = make_local_grant(cluster, alice, "scientist", max_cpus=2, max_time_minutes=10)
    jobs = [
        _run(grant, "usage-two-cpus", _script("--cpus-per-task=2", "--mem=200M", "--time=2", body="sleep 3")),
        _run(grant, "usage-fails", _script("--mem=100M", "--time=2", body="sleep 1; exit 3")),
        _run(grant, "usage-array", _script("--array=0-1", "--mem=50M", "--time=2", body="sleep 2")),
    ]
    # A job the hub did not submit, in the same account: not counted unless the admin opts in.
    with slurm_client(grant) as client:
        out = client.files.run(["sbatch", "--parsable", "--time=2", "--mem=50M", "--wrap=sleep 1"])
    assert out.exit_status == 0, out.err
    outsider = out.out.strip().split(";")[0]
    _wait_all(jobs)
    assert {j.name: j.status for j in jobs} == {
        "usage-two-cpus": Job.Status.COMPLETED,
        "usage-fails": Job.Status.FAILED,
        "usage-array": Job.Status.COMPLETED,
    }
    expected = _sacct(grant, [j.slurm_job_id for j in jobs] + [outsider])
    assert len(expected) == 5  # two plain jobs, two array tasks, the outsider

    result = usage_services.usage_collect(cluster=cluster)
    assert result.errors == [] and result.calls == 1  # one call: one cluster account

    records = {r.slurm_job_id: r for r in UsageRecord.objects.filter(cluster=cluster)}
    assert outsider not in records
    hub_ids = set(expected) - {outsider}
    assert set(records) == hub_ids
    for raw in hub_ids:
        r = records[raw]
        assert {k: getattr(r, k) for k in _expected(expected[raw])} == _expected(expected[raw]), raw
        assert r.state == expected[raw]["state"].split(" ")[0]
        assert r.user == alice and r.team == team
    by_name = {r.job.name for r in records.values()}
    assert by_name == {"usage-two-cpus", "usage-fails", "usage-array"}
    assert records[jobs[0].slurm_job_id].cpus == 2 and records[jobs[0].slurm_job_id].mem_mb == 200

    # Read again: the overlap finds the same jobs and changes nothing.
    again = usage_services.usage_collect(cluster=cluster)
    assert again.errors == [] and UsageRecord.objects.filter(cluster=cluster).count() == len(hub_ids)
    assert UsageCollection.objects.get(cluster=cluster).collected_until is not None

    # Opted in, read with an operator's account: the outsider counts too, for its grant's user.
    operator = make_local_grant(cluster, bob, "admin")
    Cluster.objects.filter(pk=cluster.pk).update(operator_grant=operator, usage_all_jobs=True)
    cluster.refresh_from_db()
    UsageCollection.objects.filter(cluster=cluster).update(collected_until=None)
    opted = usage_services.usage_collect(cluster=cluster)
    assert opted.errors == [] and opted.calls == 1
    record = UsageRecord.objects.get(cluster=cluster, slurm_job_id=outsider)
    assert record.job is None and record.user == alice
    assert {k: getattr(record, k) for k in _expected(expected[outsider])} == _expected(expected[outsider])

    # The command `./dev up` runs: the same read, said in a line per cluster.
    out = io.StringIO()
    call_command("usage_collect", cluster=cluster.name, stdout=out)
    said = re.fullmatch(rf"{cluster.name}: (\d+) finished job\(s\) in 1 call\(s\)\n", out.getvalue())
    # Every job of the account that ended within the last read's overlap (ours and others'):
    # a part of what the first, month-long read stored.
    assert said and 5 <= int(said.group(1)) <= UsageRecord.objects.filter(cluster=cluster).count()
    with pytest.raises(SystemExit) as refused:
        call_command("usage_collect", cluster="no-such-cluster", stderr=io.StringIO())
    assert refused.value.code == 2
