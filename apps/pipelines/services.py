"""Writes for pipelines: register, start a run, advance it, cancel, retry.

A run is compiled into Slurm jobs linked by ``--dependency=afterok:<ids>`` and
``--kill-on-invalid-dep=yes``, submitted in topological order as soon as their needs are on
Slurm, so the pipeline runs at Slurm's own speed and keeps running while the hub is down. Every
step is a Job: the jobs app submits it (crash-safe by its marker), tracks it (one batched poll
per cluster) and keeps its logs; ``pipeline_run_advance`` reads those rows and talks to the
cluster only to submit a step or checksum a finished step's outputs (one round trip).

The rule everywhere: record the intent and commit, talk to the cluster with no transaction
open, then record the result."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import uuid as uuid_lib
from urllib.parse import urlsplit

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from apps.accounts.teams import team_member_require
from apps.audit.services import audit_record
from apps.clusters.models import ClusterGrant
from apps.clusters.selectors import grant_for_submission, grant_usable_list
from apps.clusters.transport import slurm_client
from apps.core.errors import ApplicationError, Conflict, PermissionDenied, Unavailable, ValidationFailed
from apps.core.tasks import enqueue
from apps.core.transitions import transition
from apps.integrations.slurm.base import RemoteFileMissing, SlurmError, SlurmRejected
from apps.jobs import validation as job_validation
from apps.jobs.inputs import InputError
from apps.jobs.models import Job
from apps.jobs.services import job_create, job_submit
from apps.sweeps.models import Sweep
from apps.sweeps.services import sweep_create, sweep_launch, sweep_stop, sweep_validate
from apps.sweeps.spec import parse as sweep_parse

from . import repo
from . import spec as spec_lib
from .models import Pipeline, PipelineRun, StepOutput, StepRun

R = PipelineRun.Status
T = PipelineRun.Trigger
ST = StepRun.State
J = Job.Status
JOB_FAILED = frozenset({J.FAILED, J.TIMEOUT, J.OUT_OF_MEMORY, J.NODE_FAIL})


# ---------------------------------------------------------------- registering


def pipeline_create(
    *,
    user,
    team,
    name: str,
    grant: ClusterGrant,
    repo_url: str,
    branch: str = "main",
    path: str = "axle-pipeline.yaml",
    description: str = "",
) -> Pipeline:
    """Register a pipeline file of a repository the grant's account can read, in a team."""
    team_member_require(user=user, team=team)
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ValidationFailed("name: give the pipeline a name of up to 200 characters.")
    if grant.user_id != user.pk or grant_for_submission(user=user, cluster=grant.cluster) is None:
        raise PermissionDenied(f"You have no active grant on cluster {grant.cluster.name}.")
    repo_url, branch, path = (repo_url or "").strip(), (branch or "").strip() or "main", (path or "").strip()
    if not repo_url:
        raise ValidationFailed("repo_url: give a git URL or path the cluster account can read.")
    parts = urlsplit(repo_url)
    if parts.username or parts.password:
        raise ValidationFailed(
            "repo_url: the URL contains a user name or token; give a URL without credentials (the cluster "
            "account's own git credentials or SSH key are used to fetch it)."
        )
    if repo_url.startswith("-") or branch.startswith("-") or any(c in branch for c in " \t\n~^:?*["):
        raise ValidationFailed("branch: not a branch name git accepts.")
    if not path or path.startswith("/") or ".." in path.split("/") or "\n" in path:
        raise ValidationFailed("path: the pipeline file's path relative to the repository's root, without '..'.")
    if Pipeline.objects.filter(team=team, name=name).exists():
        raise Conflict(f"Team {team.name} already has a pipeline named {name}.")
    with transaction.atomic():
        pipeline = Pipeline.objects.create(
            team=team,
            owner=user,
            name=name,
            description=(description or "").strip(),
            grant=grant,
            cluster=grant.cluster,
            repo_url=repo_url,
            branch=branch,
            path=path,
        )
        audit_record(
            action="pipeline.created",
            subject=pipeline,
            actor=user,
            after={
                "team": team.name,
                "name": name,
                "cluster": grant.cluster.name,
                "cluster_username": grant.cluster_username,
                "repo_url": repo_url,
                "branch": branch,
                "path": path,
            },
        )
    return pipeline


# ---------------------------------------------------------------- starting a run


def _read_and_check(pipeline: Pipeline, grant: ClusterGrant, commit: str | None, parameters: dict | None):
    """Talk to the cluster as the run's grant (no transaction open): resolve the commit, read
    the file and the steps' scripts at it. Returns (commit, text, spec or None, problems)."""
    cache = repo.cache_folder(grant.job_root, pipeline.uuid)
    try:
        with slurm_client(grant) as client:
            files = client.files
            commit = (commit or "").strip() or repo.head(files, pipeline.repo_url, pipeline.branch)
            if not repo.SHA.match(commit):
                commit = repo.head(files, pipeline.repo_url, commit)
            found = repo.read_at(files, cache=cache, repo=pipeline.repo_url, commit=commit, paths=[pipeline.path])
            raw = found[pipeline.path]
            if raw is None:
                return commit, "", None, [_problem("(file)", f"{pipeline.path} does not exist at {commit[:12]}.")]
            text = raw.decode("utf-8", "replace")
            try:
                spec = spec_lib.parse(text)
            except spec_lib.SpecError as exc:
                return commit, text, None, exc.problems
            scripts = spec.script_paths()
            contents = (
                repo.read_at(files, cache=cache, repo=pipeline.repo_url, commit=commit, paths=scripts)
                if scripts
                else {}
            )
    except InputError as exc:
        raise ValidationFailed(str(exc)) from None
    except SlurmError as exc:
        raise Unavailable(f"Cluster {pipeline.cluster.name} could not be reached: {exc.message}") from None
    problems: list[dict] = []
    for step in spec.steps.values():
        if step.script_path:
            content = contents.get(step.script_path)
            if content is None:
                problems.append(
                    _problem(
                        f"steps.{step.name}.script",
                        f"{step.script_path} does not exist at {commit[:12]}.",
                        spec.lines.get(f"steps.{step.name}.script"),
                    )
                )
                continue
            step.script = content.decode("utf-8", "replace")
        if step.sweep_path:
            content = contents.get(step.sweep_path)
            if content is None:
                problems.append(
                    _problem(
                        f"steps.{step.name}.sweep",
                        f"{step.sweep_path} does not exist at {commit[:12]}.",
                        spec.lines.get(f"steps.{step.name}.sweep"),
                    )
                )
                continue
            step.sweep_text = content.decode("utf-8", "replace")
    run_parameters, param_problems = _run_parameters(spec, parameters)
    problems += param_problems
    if not problems:
        problems += _grant_problems(pipeline, grant, spec, run_parameters)
    spec.parameters = run_parameters
    return commit, text, spec, problems


def _problem(path: str, message: str, line: int | None = None) -> dict:
    return {"path": path, "line": line, "message": message}


def _run_parameters(spec: spec_lib.Spec, overrides: dict | None) -> tuple[dict[str, str], list[dict]]:
    values = dict(spec.parameters)
    problems = []
    for name, value in (overrides or {}).items():
        if name not in spec.parameters:
            known = ", ".join(spec.parameters) or "none"
            problems.append(_problem(f"parameters.{name}", f"the pipeline has no parameter {name} (it has: {known})."))
        elif isinstance(value, (dict, list)):
            problems.append(_problem(f"parameters.{name}", "must be a plain value (text or number)."))
        else:
            values[name] = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return values, problems


def _step_parameters(spec: spec_lib.Spec, step: spec_lib.Step) -> dict[str, str]:
    return {**spec.parameters, **step.parameters}


def _grant_problems(
    pipeline: Pipeline, grant: ClusterGrant, spec: spec_lib.Spec, parameters: dict[str, str]
) -> list[dict]:
    """Each step's script checked against the run's grant as the job it will be (the jobs'
    validation), every problem naming the step and the script's line."""
    problems = []
    for step in spec.steps.values():
        if step.sweep_path:
            problems += _sweep_problems(pipeline, grant, step)
            continue
        result = job_validation.validate(
            script=step.script,
            grant=grant,
            workdir=f"{grant.job_root}/<job id>",
            parameters={**parameters, **step.parameters},
            name=f"{pipeline.name}-{step.name}",
        )
        for p in result.problems:
            where = f"{step.script_path} line {p['line']}" if step.script_path and p["line"] else None
            problems.append(
                {
                    "path": f"steps.{step.name}.script",
                    "line": p["line"],
                    "message": (f"{where}: " if where else (f"script line {p['line']}: " if p["line"] else ""))
                    + p["message"],
                }
            )
    return problems


def _sweep_problems(pipeline: Pipeline, grant: ClusterGrant, step: spec_lib.Step) -> list[dict]:
    """A sweep step: its Experiment as Katib defines it and the sweep against the grant (the
    sweeps' own validation), each problem under the step's ``sweep`` field."""
    result = sweep_validate(
        user=grant.user, cluster=pipeline.cluster, spec_text=step.sweep_text, script=step.script or None
    )
    problems = [
        _problem(f"steps.{step.name}.sweep", f"{step.sweep_path}: {p['path']}: {p['message']}")
        for p in result["problems"]
    ]
    if not problems:
        script = sweep_parse(step.sweep_text, script=step.script or None).script
        if not re.match(r"^#!\S*(ba|da|k|z)?sh\b", script) and not script.startswith("#!/usr/bin/env bash"):
            problems.append(
                _problem(
                    f"steps.{step.name}.sweep",
                    "a sweep step's trial script must be a shell script (#!/bin/bash): the hub puts the "
                    "step's INPUT_ and OUTPUT_ variables at its top.",
                )
            )
    return problems


def run_grant_for(*, user, pipeline: Pipeline) -> ClusterGrant:
    """The grant a run started by ``user`` (or by a trigger ``user`` set up) runs as: that
    person's own active grant on the pipeline's cluster, never someone else's."""
    grant = grant_for_submission(user=user, cluster=pipeline.cluster)
    if grant is None:
        raise PermissionDenied(
            f"{user.get_username()} has no active grant on cluster {pipeline.cluster.name}: a pipeline run runs as "
            "the grant of whoever starts it (or set up the trigger that starts it); request access on the "
            "cluster's page."
        )
    return grant


def pipeline_run_start(
    *,
    pipeline: Pipeline,
    actor,
    trigger: str,
    commit: str | None = None,
    delivery_id: str = "",
    parameters: dict | None = None,
    trigger_detail: dict | None = None,
    unless_active: bool = False,
    run_as=None,
    trigger_key: str = "",
) -> PipelineRun:
    """Start a run: resolve the branch head (when ``commit`` is None), read the file at that
    commit, check it and every step's script against the grant, record the run and its steps,
    and queue their submission. A file that does not validate still leaves a failed run with
    its problems (a push must leave a trace); for a user's own request it raises too.

    The run's steps run as ``run_as``'s own active grant on the pipeline's cluster (by default
    the ``actor``'s: the person who clicked Run; a trigger passes the member who set it up).
    With a ``trigger_key`` (one trigger's start) at most one run is ever made for it: a second
    call returns the first call's run. With ``unless_active`` (a schedule's guard) it raises
    Conflict, starting nothing, while a run of the same commit is active; checked under the
    pipeline's lock, so two starts at once cannot both pass."""
    if trigger not in T.values:
        raise ValidationFailed(f"trigger: one of {', '.join(T.values)}.")
    if actor is not None and trigger == T.USER:
        team_member_require(user=actor, team=pipeline.team)
    runner = run_as if run_as is not None else actor
    if runner is None:
        raise ValidationFailed("A run needs the member whose grant it runs as.")
    if trigger_key and (earlier := pipeline.runs.filter(trigger_key=trigger_key).first()) is not None:
        return earlier
    grant = run_grant_for(user=runner, pipeline=pipeline)
    commit, text, spec, problems = _read_and_check(pipeline, grant, commit, parameters)
    run_uuid = uuid_lib.uuid4()
    folder = f"{grant.job_root.rstrip('/')}/pipeline-runs/{run_uuid}"
    try:
        run = _record_run(
            pipeline=pipeline,
            grant=grant,
            actor=actor,
            trigger=trigger,
            commit=commit,
            text=text,
            spec=spec,
            problems=problems,
            run_uuid=run_uuid,
            folder=folder,
            delivery_id=delivery_id,
            trigger_detail=trigger_detail,
            trigger_key=trigger_key,
            unless_active=unless_active,
        )
    except IntegrityError:
        # Another worker recorded this trigger's run meanwhile (the key is unique per pipeline).
        earlier = pipeline.runs.filter(trigger_key=trigger_key).first() if trigger_key else None
        if earlier is None:
            raise
        return earlier
    if problems and trigger == T.USER:
        raise ValidationFailed(run.message, extra={"problems": problems, "run": str(run.uuid)})
    return run


def _record_run(
    *,
    pipeline: Pipeline,
    grant: ClusterGrant,
    actor,
    trigger: str,
    commit: str,
    text: str,
    spec,
    problems: list[dict],
    run_uuid,
    folder: str,
    delivery_id: str,
    trigger_detail: dict | None,
    trigger_key: str,
    unless_active: bool,
) -> PipelineRun:
    with transaction.atomic():
        Pipeline.objects.select_for_update().only("pk").get(pk=pipeline.pk)
        if unless_active:
            active = pipeline.runs.filter(commit=commit).exclude(status__in=PipelineRun.TERMINAL).first()
            if active is not None:
                raise Conflict(f"run #{active.number} of {commit[:12]} is still {active.status}.")
        number = (pipeline.runs.aggregate(n=Max("number"))["n"] or 0) + 1
        run = PipelineRun.objects.create(
            uuid=run_uuid,
            pipeline=pipeline,
            grant=grant,
            number=number,
            commit=commit,
            trigger=trigger,
            triggered_by=actor,
            delivery_id=(delivery_id or "")[:200],
            trigger_key=trigger_key,
            trigger_detail=trigger_detail or {},
            spec_text=text,
            spec=spec.as_dict() if spec else {},
            parameters=spec.parameters if spec else {},
            folder=folder,
            status=R.FAILED if problems else R.RUNNING,
            problems=problems,
            message=("The pipeline file does not validate: " + spec_lib.describe(problems))[:4000] if problems else "",
            finished_at=timezone.now() if problems else None,
        )
        if spec and not problems:
            for position, step in enumerate(spec.steps.values()):
                row = StepRun.objects.create(run=run, name=step.name, position=position, needs=step.needs)
                _make_outputs(run, row, step)
        audit_record(
            action="pipeline_run.started" if not problems else "pipeline_run.invalid",
            subject=run,
            actor=actor,
            after={
                "pipeline": str(pipeline.uuid),
                "number": number,
                "commit": commit,
                "trigger": trigger,
                "delivery_id": delivery_id or None,
                "runs_as": grant.user.get_username(),
                "cluster_username": grant.cluster_username,
                "parameters": run.parameters,
                "problems": problems or None,
            },
        )
        if not problems:
            enqueue("apps.pipelines.tasks.pipeline_run_advance", run.pk)
    return run


def _output_path(run: PipelineRun, step: StepRun, output: str) -> str:
    return f"{run.folder}/{step.name}/{step.attempt}/{output}"


def _make_outputs(run: PipelineRun, row: StepRun, step: spec_lib.Step) -> None:
    StepOutput.objects.bulk_create([StepOutput(step=row, name=o, path=_output_path(run, row, o)) for o in step.outputs])


# ---------------------------------------------------------------- advancing a run


def spec_of(run: PipelineRun) -> spec_lib.Spec:
    return spec_lib.Spec.from_dict(run.spec)


def pipeline_run_advance(*, run_id: int) -> PipelineRun:
    """One pass over a run: record what the jobs' tracking saw end (with the outputs'
    checksums), fail or finish the run, and submit every step whose needs are on Slurm.
    Safe to run twice and concurrently: every step changes state by compare-and-swap."""
    run = PipelineRun.objects.select_related(
        "pipeline__grant__cluster", "pipeline__owner", "pipeline__team", "grant__cluster", "grant__user"
    ).get(pk=run_id)
    spec = spec_of(run)
    _record_ended(run, spec)
    _record_sweeps_ended(run)
    steps = {s.name: s for s in run.steps.select_related("job").prefetch_related("outputs")}
    if run.status == R.RUNNING:
        _cancel_orphans(run, steps)
        if all(s.state in StepRun.DONE for s in steps.values()):
            _end(run, R.SUCCEEDED, "Every step completed.")
            return run
        _submit_ready(run, spec, steps)
    return run


def _record_ended(run: PipelineRun, spec: spec_lib.Spec) -> None:
    """Steps whose job ended: outputs checksummed (one list and one sha256_many per step),
    state recorded. A failed step fails the run, naming it."""
    ended = list(
        run.steps.filter(state=ST.SUBMITTED, job__status__in=Job.TERMINAL)
        .select_related("job")
        .prefetch_related("outputs")
    )
    for step in ended:
        job = step.job
        times = {"started_at": job.started_at, "finished_at": job.finished_at or timezone.now()}
        if job.status == J.COMPLETED:
            try:
                recorded = _checksum_outputs(run, step)
            except SlurmError:
                continue  # the cluster is unreachable: the next pass records them
            with transaction.atomic():
                for out in recorded:
                    out.save(update_fields=["sha256", "size", "file_count", "recorded_at"])
                key = _step_key(run, spec, spec.steps[step.name]) if step.name in spec.steps else ""
                if StepRun.objects.filter(pk=step.pk, state=ST.SUBMITTED).update(
                    state=ST.COMPLETED, cache_key=key, updated_at=timezone.now(), **times
                ):
                    audit_record(
                        action="pipeline_step.completed",
                        subject=run,
                        after={
                            "step": step.name,
                            "job": str(job.uuid),
                            "outputs": {o.name: {"sha256": o.sha256, "size": o.size} for o in recorded},
                        },
                    )
            continue
        if job.status in JOB_FAILED:
            message = f"Step {step.name} {job.get_status_display().lower()}" + (
                f": {job.failure_message}"
                if job.failure_message
                else f" (exit code {job.exit_code})"
                if job.exit_code is not None
                else ""
            )
            state = ST.FAILED
        else:
            failed_need = run.steps.filter(name__in=step.needs, state__in=(ST.FAILED, ST.CANCELLED)).first()
            if failed_need is not None:
                message = f"Step {step.name} was cancelled by Slurm: its need {failed_need.name} did not complete."
            else:
                message = f"Step {step.name} was cancelled."
            state = ST.CANCELLED
        with transaction.atomic():
            if StepRun.objects.filter(pk=step.pk, state=ST.SUBMITTED).update(
                state=state, message=message[:2000], updated_at=timezone.now(), **times
            ):
                audit_record(
                    action=f"pipeline_step.{state}",
                    subject=run,
                    after={"step": step.name, "job": str(job.uuid), "job_status": job.status, "message": message},
                )
        run.refresh_from_db()
        root = state == ST.FAILED or "cancelled by Slurm" not in message
        if run.status == R.RUNNING and root:
            _end(run, R.FAILED, message, failed_step=step.name)


def _checksum_outputs(run: PipelineRun, step: StepRun, base: str = "") -> list[StepOutput]:
    """sha256 and size of each output folder: the files listed once, hashed in one call; an
    output's sha256 is that of its part of the ``sha256sum`` manifest (reproducible by hand)."""
    outputs = list(step.outputs.all())
    if not outputs:
        return []
    base = base or f"{run.folder}/{step.name}/{step.attempt}"
    with slurm_client(run.run_grant) as client:
        files = client.files
        try:
            entries = files.list(base)
        except RemoteFileMissing:
            entries = []
        names = [e.name for e in entries]
        lines = files.sha256_many(base, names) if names else []
    now = timezone.now()
    for out in outputs:
        prefix = f"{out.name}/"
        mine = [(e, line) for e, line in zip(entries, lines, strict=True) if e.name.startswith(prefix)]
        manifest = b"".join(line.rstrip(b"\n") + b"\n" for _, line in mine)
        out.sha256 = hashlib.sha256(manifest).hexdigest()
        out.size = sum(e.size for e, _ in mine)
        out.file_count = len(mine)
        out.recorded_at = now
    return outputs


def _cancel_orphans(run: PipelineRun, steps: dict[str, StepRun]) -> None:
    """A waiting step one of whose needs failed or was cancelled never runs."""
    for step in steps.values():  # topological order
        if step.state != ST.WAITING:
            continue
        bad = next((n for n in step.needs if steps[n].state in (ST.FAILED, ST.CANCELLED)), None)
        if bad and StepRun.objects.filter(pk=step.pk, state=ST.WAITING).update(
            state=ST.CANCELLED, message=f"Not run: its need {bad} did not complete.", updated_at=timezone.now()
        ):
            step.state = ST.CANCELLED


def cache_key(*, script_sha256: str, parameters: dict, commit: str, image_digest: str, inputs: dict) -> str:
    payload = {
        "script_sha256": script_sha256,
        "parameters": parameters,
        "commit": commit,
        "image_digest": image_digest,
        "inputs": inputs,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _step_key(run: PipelineRun, spec: spec_lib.Spec, s: spec_lib.Step) -> str:
    """The step's cache key, or "" while an input's checksum is not known (its step has not
    completed yet). A step that ran records its key when it completes, for later runs."""
    sums = {}
    for in_name, (src, out) in s.inputs.items():
        source = (
            StepOutput.objects.filter(step__run=run, step__name=src, name=out, step__state__in=StepRun.DONE)
            .exclude(sha256="")
            .first()
        )
        if source is None:
            return ""
        sums[in_name] = source.sha256
    return cache_key(
        script_sha256=hashlib.sha256(s.script.encode("utf-8")).hexdigest(),
        parameters=_step_parameters(spec, s),
        commit=run.commit,
        image_digest="",
        inputs=sums,
    )


def _ready(need: StepRun) -> bool:
    """A need lets its dependents be submitted once it is done or has a Slurm id."""
    return need.state in StepRun.DONE or (need.state == ST.SUBMITTED and bool(need.job and need.job.slurm_job_id))


def _submit_ready(run: PipelineRun, spec: spec_lib.Spec, steps: dict[str, StepRun]) -> None:
    """Submit, in topological order, every waiting step whose needs are done or on Slurm."""
    pipeline = run.pipeline
    made_folders = False
    for step in steps.values():
        if step.state != ST.WAITING:
            continue
        needs = [steps[n] for n in step.needs]
        if any(
            n.state not in StepRun.DONE and not (n.state == ST.SUBMITTED and n.job and n.job.slurm_job_id)
            for n in needs
        ):
            continue
        s = spec.steps[step.name]
        if s.sweep_path:
            # A sweep's best trial is known only when it ends, so the hub hands it on: the
            # sweep starts once its needs are done, and its dependents once it has ended.
            if all(n.state in StepRun.DONE for n in needs) and not _start_sweep(run, spec, s, step, steps):
                return
            continue
        outputs = {o.name: o for o in step.outputs.all()}
        params = _step_parameters(spec, s)
        env = {spec_lib.output_env(name): o.path for name, o in outputs.items()}
        for in_name, (src, out) in s.inputs.items():
            source = next(o for o in steps[src].outputs.all() if o.name == out)
            env[spec_lib.input_env(in_name)] = source.path
        key = _step_key(run, spec, s)
        if key:
            if s.cache and _reuse(run, step, key):
                step.refresh_from_db()
                continue
        if not made_folders:
            if not _make_folders(run):
                return
            made_folders = True
        after = [n.job.slurm_job_id for n in needs if n.state == ST.SUBMITTED and n.job.status != J.COMPLETED]
        extra = ["--kill-on-invalid-dep=yes"]
        if after:
            extra.insert(0, "--dependency=afterok:" + ":".join(after))
        try:
            with transaction.atomic():
                if (
                    not StepRun.objects.select_for_update()
                    .filter(pk=step.pk, state=ST.WAITING, job__isnull=True)
                    .exists()
                ):
                    continue  # another pass took it
                job = job_create(
                    user=run.run_grant.user,
                    cluster=pipeline.cluster,
                    name=f"{pipeline.name}-{step.name}"[:200],
                    script=s.script,
                    parameters={**params, **env},
                    code={"repo": pipeline.repo_url, "ref": run.commit},
                    code_commit=run.commit,
                    register_model_as=s.register_model,
                    team=pipeline.team,
                    extra_args=extra,
                )
                StepRun.objects.filter(pk=step.pk).update(
                    state=ST.SUBMITTED, job=job, cache_key=key, updated_at=timezone.now()
                )
                audit_record(
                    action="pipeline_step.submitted",
                    subject=run,
                    after={"step": step.name, "job": str(job.uuid), "after": after, "cache_key": key or None},
                )
        except (ValidationFailed, PermissionDenied) as exc:
            # PermissionDenied: the run's grant was suspended or expired since the run started.
            with transaction.atomic():
                StepRun.objects.filter(pk=step.pk, state=ST.WAITING).update(
                    state=ST.FAILED, message=exc.message[:2000], finished_at=timezone.now()
                )
            _end(run, R.FAILED, f"Step {step.name} could not be submitted: {exc.message}", failed_step=step.name)
            return
        job = job_submit(job_id=job.pk) or job
        job.refresh_from_db()
        step.state, step.job = ST.SUBMITTED, job
        if not job.slurm_job_id:
            return  # queued (cluster down) or being reconciled: later passes go on


def _trial_exports(
    run: PipelineRun, spec: spec_lib.Spec, s: spec_lib.Step, step: StepRun, steps: dict[str, StepRun]
) -> str:
    """Shell lines put at the top of a sweep's trial script: each trial writes its outputs
    in a folder of its own (trial-<number>), and reads its inputs from the steps before."""
    q = shlex.quote
    base = f"{run.folder}/{step.name}/{step.attempt}"
    lines = ["# Added by Axle: this pipeline step's inputs and outputs."]
    for in_name, (src, out) in s.inputs.items():
        source = next(o for o in steps[src].outputs.all() if o.name == out)
        lines.append(f"export {spec_lib.input_env(in_name)}={q(source.path)}")
    for out in s.outputs:
        var = spec_lib.output_env(out)
        lines.append(f'export {var}={q(base)}/trial-"$AXLE_TRIAL"/{q(out)}; mkdir -p "${var}"')
    for name, value in _step_parameters(spec, s).items():
        lines.append(f"export {name}={q(value)}")
    return "\n".join(lines) + "\n"


def _with_exports(script: str, exports: str) -> str:
    """``exports`` after the script's interpreter line and leading #SBATCH block."""
    lines = script.splitlines(keepends=True)
    at = 1
    while at < len(lines) and (not lines[at].strip() or lines[at].lstrip().startswith("#")):
        at += 1
    return "".join(lines[:at]) + exports + "".join(lines[at:])


def _start_sweep(
    run: PipelineRun, spec: spec_lib.Spec, s: spec_lib.Step, step: StepRun, steps: dict[str, StepRun]
) -> bool:
    """Create the step's sweep (its trial script given the step's variables) and launch its
    first wave. False when the cluster could not be reached (a later pass tries again)."""
    pipeline = run.pipeline
    sweep_spec = sweep_parse(s.sweep_text, script=s.script or None)
    script = _with_exports(sweep_spec.script, _trial_exports(run, spec, s, step, steps))
    try:
        with transaction.atomic():
            mine = StepRun.objects.select_for_update().filter(pk=step.pk, state=ST.WAITING, sweep__isnull=True)
            if not mine.exists():
                return True
            sweep = sweep_create(
                user=run.run_grant.user,
                cluster=pipeline.cluster,
                spec_text=s.sweep_text,
                script=script,
                team=pipeline.team,
            )
            StepRun.objects.filter(pk=step.pk).update(
                state=ST.SUBMITTED, sweep=sweep, started_at=timezone.now(), updated_at=timezone.now()
            )
            audit_record(
                action="pipeline_step.sweep_started", subject=run, after={"step": step.name, "sweep": str(sweep.uuid)}
            )
    except ApplicationError as exc:
        with transaction.atomic():
            StepRun.objects.filter(pk=step.pk, state=ST.WAITING).update(
                state=ST.FAILED, message=exc.message[:2000], finished_at=timezone.now()
            )
        _end(run, R.FAILED, f"Step {step.name}'s sweep could not start: {exc.message}", failed_step=step.name)
        return False
    job = sweep_launch(sweep_id=sweep.pk)
    if job is not None:
        job_submit(job_id=job.pk)
    step.state = ST.SUBMITTED
    return True


def _record_sweeps_ended(run: PipelineRun) -> None:
    """Sweep steps whose sweep ended: the best trial's output folders become the step's
    outputs (checksummed as any step's), which its dependents then read."""
    for step in run.steps.filter(state=ST.SUBMITTED, sweep__status__in=Sweep.TERMINAL).select_related("sweep"):
        sweep = step.sweep
        times = {"finished_at": sweep.finished_at or timezone.now()}
        best = None
        if sweep.status == Sweep.Status.SUCCEEDED:
            sweep_spec = sweep_parse(sweep.spec_text, script=sweep.script)
            for trial in sweep.trials.filter(objective__isnull=False, state="succeeded").order_by("number"):
                if best is None or sweep_spec.is_better(trial.objective, best.objective):
                    best = trial
        if best is None:
            message = f"Step {step.name}'s sweep {sweep.status}: {sweep.message}"
            with transaction.atomic():
                if StepRun.objects.filter(pk=step.pk, state=ST.SUBMITTED).update(
                    state=ST.FAILED, message=message[:2000], updated_at=timezone.now(), **times
                ):
                    audit_record(
                        action="pipeline_step.failed", subject=run, after={"step": step.name, "message": message}
                    )
            run.refresh_from_db()
            if run.status == R.RUNNING:
                _end(run, R.FAILED, message, failed_step=step.name)
            continue
        base = f"{run.folder}/{step.name}/{step.attempt}/trial-{best.number}"
        for out in step.outputs.all():
            StepOutput.objects.filter(pk=out.pk).update(path=f"{base}/{out.name}")
        try:
            recorded = _checksum_outputs(run, step, base=base)
        except SlurmError:
            continue
        message = f"Best trial {best.number} ({sweep.message})"
        with transaction.atomic():
            for out in recorded:
                out.save(update_fields=["sha256", "size", "file_count", "recorded_at"])
            if StepRun.objects.filter(pk=step.pk, state=ST.SUBMITTED).update(
                state=ST.COMPLETED, message=message[:2000], updated_at=timezone.now(), **times
            ):
                audit_record(
                    action="pipeline_step.completed",
                    subject=run,
                    after={
                        "step": step.name,
                        "sweep": str(sweep.uuid),
                        "best_trial": best.number,
                        "objective": best.objective,
                        "outputs": {o.name: {"sha256": o.sha256, "size": o.size} for o in recorded},
                    },
                )


def _make_folders(run: PipelineRun) -> bool:
    """Every output folder of the waiting steps, made in one call, before any step runs."""
    paths = list(
        StepOutput.objects.filter(step__run=run, step__state=ST.WAITING, reused_from__isnull=True).values_list(
            "path", flat=True
        )
    )
    if not paths:
        return True
    try:
        with slurm_client(run.run_grant) as client:
            result = client.files.run(["mkdir", "-p", "--", *paths], timeout=60)
    except SlurmError:
        return False
    if result.exit_status != 0:
        _end(run, R.FAILED, f"The run's folder {run.folder} could not be made: {result.err.strip()}")
        return False
    return True


def _reuse(run: PipelineRun, step: StepRun, key: str) -> bool:
    """A cache hit: an earlier completed step of the same pipeline with the same key. Its
    outputs are reused in place; nothing is submitted."""
    # Only outputs written by the same cluster account: another member's run folder need not
    # be readable by this run's account.
    source = (
        StepRun.objects.filter(
            run__pipeline=run.pipeline,
            cache_key=key,
            state=ST.COMPLETED,
            name=step.name,
            run__grant__cluster_username=run.run_grant.cluster_username,
        )
        .exclude(run=run)
        .order_by("-finished_at")
        .prefetch_related("outputs")
        .first()
    )
    if source is None:
        return False
    theirs = {o.name: o for o in source.outputs.all()}
    mine = list(step.outputs.all())
    if any(o.name not in theirs or not theirs[o.name].sha256 for o in mine):
        return False
    with transaction.atomic():
        if not StepRun.objects.filter(pk=step.pk, state=ST.WAITING, job__isnull=True).update(
            state=ST.CACHED,
            cached_from=source,
            cache_key=key,
            message=f"Cache hit: outputs of run #{source.run.number} reused.",
            started_at=timezone.now(),
            finished_at=timezone.now(),
            updated_at=timezone.now(),
        ):
            return False
        for out in mine:
            src = theirs[out.name]
            StepOutput.objects.filter(pk=out.pk).update(
                path=src.path,
                sha256=src.sha256,
                size=src.size,
                file_count=src.file_count,
                reused_from=src,
                recorded_at=timezone.now(),
            )
        audit_record(
            action="pipeline_step.cached",
            subject=run,
            after={"step": step.name, "cache_key": key, "reused_run": str(source.run.uuid), "reused_step": source.pk},
        )
    return True


def _end(run: PipelineRun, status: str, message: str, *, actor=None, failed_step: str = "") -> PipelineRun:
    try:
        return transition(
            obj=run,
            to=status,
            transitions=PipelineRun.TRANSITIONS,
            action=f"pipeline_run.{status}",
            actor=actor,
            fields={"message": message[:4000], "finished_at": timezone.now(), "failed_step": failed_step},
            data={"message": message, "failed_step": failed_step or None},
        )
    except Conflict:
        run.refresh_from_db()
        return run


def pipeline_runs_advance() -> int:
    """Advance every run that is running or still has steps on Slurm."""
    ids = list(
        PipelineRun.objects.filter(status=R.RUNNING)
        .values_list("pk", flat=True)
        .union(StepRun.objects.filter(state=ST.SUBMITTED).values_list("run_id", flat=True))
    )
    for run_id in ids:
        pipeline_run_advance(run_id=run_id)
    return len(ids)


# ---------------------------------------------------------------- cancel and retry


def _require_member(user, run: PipelineRun) -> None:
    team_member_require(user=user, team=run.pipeline.team)


def pipeline_run_cancel(*, user, run: PipelineRun) -> PipelineRun:
    """Cancel every job of the run still waiting or running, in one scancel."""
    _require_member(user, run)
    if run.is_terminal and not run.steps.filter(state=ST.SUBMITTED).exists():
        raise Conflict(f"The run already ended ({run.get_status_display().lower()}).")
    with transaction.atomic():
        audit_record(action="pipeline_run.cancel_requested", subject=run, actor=user, after={"status": run.status})
        StepRun.objects.filter(run=run, state=ST.WAITING).update(
            state=ST.CANCELLED, message=f"Cancelled by {user.get_username()}.", updated_at=timezone.now()
        )
    for step in run.steps.filter(state=ST.SUBMITTED, sweep__isnull=False).select_related("sweep__owner"):
        if not step.sweep.is_terminal:
            # The sweep's own stop: one scancel per wave's array, its trials marked cancelled.
            sweep_stop(user=step.sweep.owner, sweep=step.sweep)
    jobs = list(Job.objects.filter(pipeline_steps__run=run, pipeline_steps__state=ST.SUBMITTED))
    on_slurm = [j.slurm_job_id for j in jobs if j.status in Job.ACTIVE_ON_CLUSTER and j.slurm_job_id]
    if on_slurm:
        try:
            with slurm_client(run.run_grant) as client:
                client.cancel_many(on_slurm)
        except SlurmRejected as exc:
            # A job that ended meanwhile makes scancel complain; the others are cancelled.
            if "already" not in exc.message and "Invalid job id" not in exc.message:
                raise Conflict(f"Slurm refused to cancel the run's jobs: {exc.message}") from None
        except SlurmError as exc:
            raise Unavailable(f"Cluster {run.pipeline.cluster.name} could not be reached: {exc.message}") from None
    for job in jobs:
        if job.status == J.QUEUED:
            try:
                transition(
                    obj=job,
                    to=J.CANCELLED,
                    transitions=Job.TRANSITIONS,
                    action="job.cancelled",
                    actor=user,
                    fields={"finished_at": timezone.now()},
                    data={"where": "hub queue", "pipeline_run": str(run.uuid)},
                )
            except Conflict:
                pass
    if run.status == R.RUNNING:
        run = _end(run, R.CANCELLED, f"Cancelled by {user.get_username()}.", actor=user)
    return run


def pipeline_run_retry(*, user, run: PipelineRun) -> PipelineRun:
    """Run again the failed and cancelled steps and what depends on them, in the same run;
    completed steps keep their outputs and are not run again."""
    _require_member(user, run)
    grant = run.run_grant
    if grant.user_id != user.pk:
        # The steps run again in the run's folder, as the run's account: only its holder may.
        raise PermissionDenied(
            f"Run #{run.number} runs as {grant.user.get_username()}'s grant ({grant.cluster_username} on "
            f"{run.pipeline.cluster.name}); only they can retry it. Start a new run to run it as your own grant."
        )
    if not grant_usable_list(user=user).filter(pk=grant.pk).exists():
        # The steps would run as that grant (its account, its folder, its limits): a grant
        # suspended, revoked or expired since refuses the retry, even when another one is active.
        other = grant_for_submission(user=user, cluster=run.pipeline.cluster)
        raise PermissionDenied(
            f"Run #{run.number} runs as your grant {grant.cluster_username} on {run.pipeline.cluster.name}, "
            "which is not active any more, so it cannot be retried; "
            + ("start a new run to run it as your current grant." if other else "you have no active grant there.")
        )
    if run.status not in (R.FAILED, R.CANCELLED):
        raise Conflict(f"Only a failed or cancelled run can be retried; this one is {run.status}.")
    if not run.spec:
        raise Conflict("The run's pipeline file never validated; start a new run once it is fixed.")
    spec = spec_of(run)
    steps = {s.name: s for s in run.steps.select_related("job", "sweep")}
    redo = spec.dependents({n for n, s in steps.items() if s.state in (ST.FAILED, ST.CANCELLED)})
    busy = [n for n in redo if steps[n].state == ST.SUBMITTED]
    if busy:
        raise Conflict(f"Steps {', '.join(busy)} are still on Slurm; retry once they ended.")
    with transaction.atomic():
        transition(
            obj=run,
            to=R.RUNNING,
            transitions=PipelineRun.TRANSITIONS,
            action="pipeline_run.retried",
            actor=user,
            fields={"finished_at": None, "failed_step": "", "message": ""},
            data={"steps": sorted(redo)},
        )
        for name in redo:
            step = steps[name]
            previous = [*step.previous_jobs, str(step.job.uuid)] if step.job else list(step.previous_jobs)
            if step.sweep_id:
                previous.append(f"sweep:{step.sweep.uuid}")
            StepRun.objects.filter(pk=step.pk).update(
                state=ST.WAITING,
                job=None,
                sweep=None,
                previous_jobs=previous,
                attempt=step.attempt + 1,
                cache_key="",
                cached_from=None,
                message="",
                started_at=None,
                finished_at=None,
                updated_at=timezone.now(),
            )
            step.attempt += 1
            step.outputs.all().delete()
            _make_outputs(run, step, spec.steps[name])
        enqueue("apps.pipelines.tasks.pipeline_run_advance", run.pk)
    run.refresh_from_db()
    return run
