"""Pipelines on the real local cluster, through both transports: every step submitted at once
with afterok dependencies, outputs passed and checksummed, a failure cancelling the
dependents on Slurm, Retry, Cancel, and a cache hit that submits nothing."""

import hashlib
import time

import pytest

from apps.audit.models import AuditEvent
from apps.clusters.transport import slurm_client
from apps.jobs import services as job_services
from apps.jobs.models import Job
from apps.pipelines import services
from apps.pipelines.models import PipelineRun, StepRun

from .conftest import drive, script

pytestmark = [pytest.mark.slurm, pytest.mark.mlflow, pytest.mark.slow]

R = PipelineRun.Status
ST = StepRun.State

DIAMOND = """
name: diamond
parameters:
  GREETING: hello
steps:
  a:
    script: steps/a.sbatch
    outputs: [data]
  b:
    needs: [a]
    inputs: {data: a.data}
    outputs: [out]
    script: |
      #!/bin/bash
      #SBATCH --partition=debug
      #SBATCH --time=00:05:00
      #SBATCH --mem=100M
      set -euo pipefail
      echo "b saw $(cat "$INPUT_DATA/x.txt")" > "$OUTPUT_OUT/b.txt"
  c:
    needs: [a]
    inputs: {data: a.data}
    outputs: [out]
    parameters: {SUFFIX: "!"}
    script: steps/c.sbatch
  d:
    needs: [b, c]
    inputs: {left: b.out, right: c.out}
    outputs: [joined]
    script: steps/d.sbatch
"""

FILES = {
    "axle-pipeline.yaml": DIAMOND,
    "steps/a.sbatch": script('echo "$GREETING" > "$OUTPUT_DATA/x.txt"'),
    "steps/c.sbatch": script('echo "c saw $(cat "$INPUT_DATA/x.txt")$SUFFIX" > "$OUTPUT_OUT/c.txt"'),
    "steps/d.sbatch": script('cat "$INPUT_LEFT/b.txt" "$INPUT_RIGHT/c.txt" > "$OUTPUT_JOINED/all.txt"'),
}


def start(pipeline, user, **kwargs) -> PipelineRun:
    """What the queued task does right after the commit (tests hold one transaction)."""
    run = services.pipeline_run_start(pipeline=pipeline, actor=user, trigger="user", **kwargs)
    services.pipeline_run_advance(run_id=run.pk)
    return run


def _pipeline(alice, team, grant, cluster_repo, files=FILES, name="diamond"):
    cluster_repo.commit(files)
    return services.pipeline_create(
        user=alice, team=team, name=name, grant=grant, repo_url=cluster_repo.path, branch="main"
    )


def test_a_diamond_passes_outputs_through_slurm_dependencies(alice, team, grant, cluster_repo):
    pipeline = _pipeline(alice, team, grant, cluster_repo)
    run = start(pipeline, alice)
    steps = {s.name: s for s in run.steps.select_related("job")}
    # Every step is on Slurm before the first one ended: the DAG runs at Slurm's speed.
    assert all(s.job and s.job.slurm_job_id for s in steps.values()), [(s.name, s.state) for s in steps.values()]
    d_args = steps["d"].job.hub_args
    assert f"--dependency=afterok:{steps['b'].job.slurm_job_id}:{steps['c'].job.slurm_job_id}" in d_args
    assert "--kill-on-invalid-dep=yes" in d_args
    assert not any(a.startswith("--dependency") for a in steps["a"].job.hub_args)

    run = drive(run)
    assert run.status == R.SUCCEEDED, run.message
    d = run.steps.get(name="d")
    joined = d.outputs.get(name="joined")
    text = cluster_repo.read(f"{joined.path}/all.txt")
    assert text == "b saw hello\nc saw hello!\n"
    # The checksum is that of sha256sum's manifest of the folder, reproducible by hand.
    line = f"{hashlib.sha256(text.encode()).hexdigest()}  joined/all.txt\n"
    assert joined.sha256 == hashlib.sha256(line.encode()).hexdigest()
    assert joined.size == len(text) and joined.file_count == 1
    assert run.steps.get(name="a").job.code_commit == run.commit
    assert AuditEvent.objects.filter(action="pipeline_step.completed", subject_id=str(run.uuid)).count() == 4


def test_a_failing_middle_step_fails_the_run_and_slurm_cancels_its_dependents(alice, team, grant, cluster_repo):
    files = {**FILES, "steps/c.sbatch": script('echo "c breaks" >&2; exit 3')}
    pipeline = _pipeline(alice, team, grant, cluster_repo, files)
    run = start(pipeline, alice)
    run = drive(run)
    assert run.status == R.FAILED
    assert run.failed_step == "c"
    assert "Step c failed" in run.message
    states = dict(run.steps.values_list("name", "state"))
    assert states == {"a": ST.COMPLETED, "b": ST.COMPLETED, "c": ST.FAILED, "d": ST.CANCELLED}
    d = run.steps.select_related("job").get(name="d")
    assert d.job.status == Job.Status.CANCELLED  # Slurm's kill-on-invalid-dep, not the hub
    assert "cancelled by Slurm" in d.message

    # Retry: c and d run again; a and b are not resubmitted, their outputs stay.
    a_job, b_job = run.steps.get(name="a").job_id, run.steps.get(name="b").job_id
    cluster_repo.commit({"steps/c.sbatch": script('echo "fixed" > "$OUTPUT_OUT/c.txt"')})
    # The run keeps its commit: the fix is not in it, so make c pass another way.
    run.spec["steps"][2]["script"] = script('echo "c retried" > "$OUTPUT_OUT/c.txt"')
    PipelineRun.objects.filter(pk=run.pk).update(spec=run.spec)
    run.refresh_from_db()
    run = services.pipeline_run_retry(user=alice, run=run)
    run = drive(run)
    assert run.status == R.SUCCEEDED, run.message
    assert run.steps.get(name="a").job_id == a_job and run.steps.get(name="b").job_id == b_job
    c = run.steps.get(name="c")
    assert c.attempt == 2 and len(c.previous_jobs) == 1
    d = run.steps.get(name="d")
    assert cluster_repo.read(f"{d.outputs.get().path}/all.txt") == "b saw hello\nc retried\n"


def test_a_second_run_of_the_same_commit_is_a_cache_hit_that_submits_nothing(alice, team, grant, cluster_repo):
    pipeline = _pipeline(alice, team, grant, cluster_repo)
    first = drive(start(pipeline, alice))
    assert first.status == R.SUCCEEDED, first.message
    jobs_before = Job.objects.count()
    second = start(pipeline, alice)
    second = drive(second)
    assert second.status == R.SUCCEEDED
    assert Job.objects.count() == jobs_before
    for step in second.steps.all():
        assert step.state == ST.CACHED and step.job_id is None
        assert step.cached_from.run_id == first.pk
        for out in step.outputs.all():
            assert out.reused_from is not None and out.sha256 == out.reused_from.sha256

    # A changed parameter misses the cache from the first step on.
    third = drive(start(pipeline, alice, parameters={"GREETING": "hi"}))
    assert third.status == R.SUCCEEDED
    assert not third.steps.filter(state=ST.CACHED).exists()


def test_cancel_stops_every_job_of_the_run_in_one_call(alice, team, grant, cluster_repo):
    files = {**FILES, "steps/a.sbatch": script("sleep 120")}
    pipeline = _pipeline(alice, team, grant, cluster_repo, files)
    run = start(pipeline, alice)
    run = services.pipeline_run_cancel(user=alice, run=run)
    assert run.status == R.CANCELLED
    run = drive(run)
    assert set(run.steps.values_list("state", flat=True)) == {ST.CANCELLED}
    assert set(Job.objects.filter(pipeline_steps__run=run).values_list("status", flat=True)) == {Job.Status.CANCELLED}


def test_with_the_hub_stopped_the_run_completes_on_slurm_and_the_hub_catches_up(alice, team, grant, cluster_repo):
    pipeline = _pipeline(alice, team, grant, cluster_repo)
    run = start(pipeline, alice)  # every step is on Slurm now; then no worker runs
    ids = [s.job.slurm_job_id for s in run.steps.select_related("job")]
    with slurm_client(grant) as client:
        deadline = time.monotonic() + 600
        while True:
            infos = client.accounting(ids)
            done = {i.job_id for i in infos if i.state == "COMPLETED"}
            if done >= set(ids):
                break
            assert time.monotonic() < deadline, [(i.job_id, i.state) for i in infos]
            time.sleep(2)
    run.refresh_from_db()
    assert run.status == R.RUNNING and set(run.steps.values_list("state", flat=True)) == {ST.SUBMITTED}
    # The workers come back: one poll and one pass record everything.
    job_services.jobs_poll()
    services.pipeline_run_advance(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == R.SUCCEEDED
    assert all(o.sha256 for s in run.steps.all() for o in s.outputs.all())
