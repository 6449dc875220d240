"""Writes for sweeps: create (spec and grant checked, trials asked), launch a wave as one job
array through the jobs machinery, stop, extend.

A wave is a Job: the jobs app submits it (crash-safe by its marker), tracks it (one batched
poll, array tasks folded into JobTask rows) and keeps its logs; the sweep reads those rows
(advance.py). The rule everywhere: record the intent and commit, talk to the cluster with no
transaction open, then record the result."""

from __future__ import annotations

import logging
import uuid as uuid_lib
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from apps.accounts.teams import team_default
from apps.audit.services import audit_record, audit_record_many
from apps.clusters.models import Cluster, ClusterGrant
from apps.clusters.selectors import grant_for_submission
from apps.clusters.transport import ready, slurm_client, stage_one, unstage
from apps.core.bulk import bulk_insert
from apps.core.errors import Conflict, PermissionDenied, Unavailable, ValidationFailed
from apps.core.leases import work_lease
from apps.core.tasks import enqueue
from apps.core.transitions import transition
from apps.integrations.slurm.base import SlurmError, deadline
from apps.jobs import validation as job_validation
from apps.jobs.models import Job
from apps.jobs.services import job_create
from apps.jobs.services.create import job_unsaved
from apps.jobs.services.submit import job_lease_name, job_submit_taken, taken_request

from . import hyperband, search, trialscript
from .models import Sweep, Trial
from .runs import close_runs
from .spec import Spec, SpecError, parse

logger = logging.getLogger(__name__)

# How long the POST's own sbatch may take beyond AXLE_SWEEP_SUBMIT_WAIT_SECONDS.
SUBMIT_GRACE_SECONDS = 5.0

S = Sweep.Status
T = Trial.State


def spec_of(sweep: Sweep) -> Spec:
    spec = parse(sweep.spec_text, script=sweep.script)
    return spec


def _problems_text(problems: list[dict]) -> str:
    return "; ".join((f"line {p['line']}: " if p.get("line") else "") + p["message"] for p in problems)


def _grant_problems(
    *,
    spec: Spec,
    grant: ClusterGrant,
    size: int,
    folder: str,
    result: job_validation.Validation | None = None,
) -> list[dict]:
    """The sweep checked against the grant as the job array it will be: the array size, the
    per-task resources and the active jobs, with the numbers. ``result``: the wave's own
    script already validated (the POST that submits it), else a script of the same shape is."""
    if result is None:
        script = trialscript.array_script(
            spec=spec, script=spec.script, folder=folder, wave=0, size=max(size, 1), parallel=spec.parallel_trial_count
        )
        result = job_validation.validate(
            script=script, grant=grant, workdir=f"{grant.job_root}/<job id>", name=spec.name
        )
    problems = [
        {"path": "spec.trialTemplate.trialSpec", "line": p["line"], "message": p["message"]} for p in result.problems
    ]
    # The wrapper's lines are not the user's: a line number would point at the wrong line.
    for p in problems:
        p.pop("line")
    if (
        grant.max_array_size is not None
        and size > grant.max_array_size
        and not any("array" in p["message"] for p in problems)
    ):
        problems.append(
            {
                "path": "spec.maxTrialCount",
                "message": f"The sweep is one job array of {size} tasks; your grant allows arrays of up to "
                f"{grant.max_array_size}.",
            }
        )
    if grant.max_active_jobs is not None:
        active = Job.objects.filter(grant=grant).exclude(status__in=Job.TERMINAL).count()
        if active >= grant.max_active_jobs:
            problems.append(
                {
                    "path": "(grant)",
                    "message": f"You already have {active} active jobs on {grant.cluster.name}, your grant's "
                    f"limit of {grant.max_active_jobs}; the sweep's array would be one more.",
                }
            )
    return problems


def _first_wave_size(spec: Spec) -> int:
    if spec.algorithm == "hyperband":
        return min(hyperband.first_rung_size(spec), spec.trial_count())
    return spec.trial_count() if not spec.adaptive else min(spec.parallel_trial_count, spec.trial_count())


def _hyperband_suggest(
    spec: Spec, trials: list[Trial], attrs: dict, *, limit: int
) -> tuple[list[search.Suggestion], dict]:
    """Katib's hyperband: the next rung, as trials with the rung's budget in the resource
    parameter (hyperband.py)."""
    state = (attrs or {}).get(hyperband.KEY)
    start = len(trials)
    rung_numbers = set((state or {}).get("rung", []))
    ended = [
        hyperband.Ended(number=t.number, params=t.params, succeeded=t.state == T.SUCCEEDED, value=t.objective)
        for t in trials
        if t.number in rung_numbers
    ]

    def sample(n: int) -> list[dict]:
        return [s.params for s in search.ask(spec, [], n, asked=start)[0]]

    rung, state = hyperband.next_rung(spec, state, ended, sample, start=start, limit=limit)
    suggestions = []
    for params, parent in rung.configurations if rung else []:
        note = {"bracket": rung.bracket, "rung": rung.rung, "budget": rung.budget}
        if parent is not None:
            note["continues"] = parent
        suggestions.append(search.Suggestion(params=params, system_attrs={hyperband.KEY: note}))
    return suggestions, {**(attrs or {}), hyperband.KEY: state}


def _suggest(spec: Spec, count: int) -> tuple[list[search.Suggestion], dict]:
    """The first trials of a new sweep."""
    if spec.algorithm == "hyperband":
        return _hyperband_suggest(spec, [], {}, limit=count)
    return search.ask(spec, [], count)


def sweep_validate(*, user, cluster: Cluster, spec_text: str, script: str | None = None) -> dict:
    """Everything wrong with a sweep before it is created: the spec's problems with their
    field paths, then the grant's. Never raises for a bad spec."""
    try:
        spec = parse(spec_text, script=script)
    except SpecError as exc:
        return {"ok": False, "problems": exc.problems}
    problems = _static_problems(spec, cluster)
    grant = grant_for_submission(user=user, cluster=cluster)
    if grant is None:
        problems.append({"path": "(grant)", "message": f"You have no active grant on cluster {cluster.name}."})
    else:
        problems += _grant_problems(
            spec=spec, grant=grant, size=_first_wave_size(spec), folder=f"{grant.job_root}/sweep"
        )
    return {
        "ok": not problems,
        "problems": problems,
        "trials": spec.trial_count(),
        "first_array": _first_wave_size(spec),
        "algorithm": spec.algorithm,
    }


def _static_problems(spec: Spec, cluster: Cluster) -> list[dict]:
    problems = []
    if problem := trialscript.array_problem(spec.script):
        problems.append({"path": "spec.trialTemplate.trialSpec", "message": problem})
    if cluster.tracking_mode == Cluster.TrackingMode.FILE:
        problems.append(
            {
                "path": "(cluster)",
                "message": f"Cluster {cluster.name} tracks through a file store (its nodes cannot reach MLflow); "
                "sweeps need trials that report to MLflow while they run.",
            }
        )
    try:
        search.sampler(spec)
    except SpecError as exc:
        problems += exc.problems
    return problems


def sweep_create(
    *,
    user,
    cluster: Cluster,
    spec_text: str,
    script: str | None = None,
    team=None,
    submit_now: bool = False,
    grant: ClusterGrant | None = None,
) -> Sweep:
    """Check the spec and the grant, ask Optuna for the first trials, record them, and queue
    the launch of their job array.

    With ``submit_now`` (the API's POST) the first wave goes to Slurm from this process when
    it can reach the cluster at once (`transport.ready`: an idle pooled connection, or one
    made within AXLE_SWEEP_SUBMIT_WAIT_SECONDS): the sweep, its trials and the wave's Job are
    recorded in ONE transaction, the Job already `submitting` (its first attempt, taken by
    this request: `job_create(taken=True)`) with its lease held by this process from before
    the commit, its script validated once (the wave's own text, for the sweep and the Job
    alike), and the trials already in it; after the commit the Job is delivered
    (`job_submit_taken`). A process killed at any point after the commit leaves the Job
    `submitting` with its lease gone: the stuck-submission check finds the array by its
    marker (one array, never a second sbatch), as for a dead worker. ``sweep.launch`` says
    what happened: "submitted" (Slurm answered with the array's id), "queued" (a worker does
    it), "failed" (``sweep.launch_message`` says why) or "unknown" (the cluster did not answer
    the sbatch in time: the job is found by its marker). The submission is bounded to
    AXLE_SWEEP_SUBMIT_WAIT_SECONDS + SUBMIT_GRACE_SECONDS."""
    spec = parse(spec_text, script=script)
    # `grant`: the caller's `grant_for_submission` on this cluster, in this request.
    grant = grant or grant_for_submission(user=user, cluster=cluster)
    if grant is None:
        raise PermissionDenied(f"You have no active grant on cluster {cluster.name}.")
    team = team or team_default(user)
    sweep_uuid = uuid_lib.uuid4()
    folder = f"{grant.job_root}/sweep-{sweep_uuid}"
    size = _first_wave_size(spec)
    problems = _static_problems(spec, cluster)
    wave, staged = None, None
    if not problems and submit_now and settings.AXLE_SWEEP_SUBMIT_WAIT_SECONDS > 0:
        # The wave's own script, checked once: for the sweep here and as the Job's validation.
        suggestions, attrs = _suggest(spec, size)
        wave = _first_wave(spec, grant, folder, suggestions)
        problems += _grant_problems(spec=spec, grant=grant, size=size, folder=folder, result=wave.result)
    else:
        problems += _grant_problems(spec=spec, grant=grant, size=size, folder=folder)
    if problems:
        raise ValidationFailed(
            "The sweep cannot run: " + "; ".join(f"{p['path']}: {p['message']}" for p in problems),
            extra={"problems": problems},
        )
    if wave is None:
        suggestions, attrs = _suggest(spec, size)
    elif not ready(grant, wait=settings.AXLE_SWEEP_SUBMIT_WAIT_SECONDS):
        # Asked before the transaction opens (it may connect to the cluster), and only for a
        # sweep that can run. The cluster is not at hand: a worker launches the wave.
        wave = None
    else:
        # The wave's submission sent now, from the job as the transaction below records it:
        # the login node starts its shell and reads the login environment while the
        # transaction runs, and runs sbatch only at the go sent once it has committed.
        unsaved = job_unsaved(
            user=user,
            grant=grant,
            cluster=cluster,
            name=wave.name,
            script=wave.script,
            validated=wave.result,
            job_uuid=wave.job_uuid,
            team=team,
            own_run=False,
        )
        if (request := taken_request(unsaved)) is not None:
            with deadline(settings.AXLE_SWEEP_SUBMIT_WAIT_SECONDS):
                staged = stage_one(grant, request)
    job = None
    with ExitStack() as lease:
        # Rolled back, the transaction leaves the program sent ahead closed (outside it).
        with _unstaged_on_failure(grant, staged), transaction.atomic():
            sweep = Sweep.objects.create(
                uuid=sweep_uuid,
                owner=user,
                team=team,
                grant=grant,
                cluster=cluster,
                name=spec.name,
                spec_text=spec_text,
                script=spec.script,
                algorithm=spec.algorithm,
                max_trial_count=spec.trial_count(),
                folder=folder,
                optuna_attrs=attrs,
                # The first wave is claimed at birth when this request launches it.
                waves=1 if wave is not None else 0,
            )
            events = [
                {
                    "action": "sweep.created",
                    "subject": sweep,
                    "actor": user,
                    "after": {
                        "cluster": cluster.name,
                        "algorithm": spec.algorithm,
                        "trials": sweep.max_trial_count,
                        "parallel": spec.parallel_trial_count,
                        "first_array": len(suggestions),
                    },
                }
            ]
            if wave is not None:
                job = job_create(
                    user=user,
                    cluster=cluster,
                    name=wave.name,
                    script=wave.script,
                    team=team,
                    own_run=False,
                    grant=grant,
                    job_uuid=wave.job_uuid,
                    validated=wave.result,
                    taken=True,
                    audit=events,
                )
                # Held from before the commit to the end of the submission: the re-drive and
                # the stuck check never take the job from this request while it is alive.
                if not lease.enter_context(work_lease(job_lease_name(job.pk))):
                    raise RuntimeError(f"the lease of job {job.pk}, made in this transaction, is held elsewhere")
                _record_trials(sweep, spec, suggestions, start=0, job=job)
                events.append(
                    {
                        "action": "sweep.array_created",
                        "subject": sweep,
                        "actor": user,
                        "after": {"wave": 0, "job": str(job.uuid), "trials": list(range(len(suggestions)))},
                    }
                )
            else:
                _record_trials(sweep, spec, suggestions, start=0)
                enqueue("apps.sweeps.tasks.sweep_launch", sweep.pk)
            audit_record_many(events)
        sweep.launch, sweep.launch_message = "queued", ""
        if job is not None:
            sweep.launch, sweep.launch_message = _submit_wave(job)
    return sweep


@contextmanager
def _unstaged_on_failure(grant: ClusterGrant, client):
    """On an error in the block, close the submission `stage_one` sent ahead on `client` (None:
    nothing was sent): its go will not come, and it must not wait for it on the login node."""
    try:
        yield
    except BaseException:
        if client is not None:
            try:
                unstage(grant, client)
            except Exception:  # noqa: BLE001 - the block's own error is the one to raise
                logger.exception("Closing the wave sent ahead to %s failed", grant.cluster.name)
        raise


@dataclass
class _Wave:
    """A first wave's Job as the POST makes it: its name, script and uuid, and the script's
    validation against the grant (for the workdir of that uuid)."""

    name: str
    script: str
    job_uuid: uuid_lib.UUID
    result: job_validation.Validation


def _first_wave(spec: Spec, grant: ClusterGrant, folder: str, suggestions: list[search.Suggestion]) -> _Wave:
    values = [search.rendered(spec, s.params) for s in suggestions]
    script = trialscript.array_script(
        spec=spec,
        script=spec.script,
        folder=folder,
        wave=0,
        size=len(suggestions),
        parallel=spec.parallel_trial_count,
        params=trialscript.params_file(spec, list(enumerate(values))),
    )
    name = f"{spec.name}-0"[:200]
    job_uuid = uuid_lib.uuid4()
    result = job_validation.validate(script=script, grant=grant, workdir=f"{grant.job_root}/{job_uuid}", name=name)
    return _Wave(name=name, script=script, job_uuid=job_uuid, result=result)


def _submit_wave(job: Job) -> tuple[str, str]:
    """Deliver the wave's Job, made `submitting` in the sweep's transaction and leased by the
    caller. Only this job: a request does not deliver the grant's backlog."""
    try:
        # A pooled connection may hang and sbatch take long: the request waits a few seconds
        # at most, then the submission is ambiguous (the job `unknown`).
        with deadline(settings.AXLE_SWEEP_SUBMIT_WAIT_SECONDS + SUBMIT_GRACE_SECONDS):
            job_submit_taken(job=job)
    except Exception as exc:
        # The sweep exists: a 500 would make a retrying client create a second one. Whether
        # sbatch ran is not known: the marker search decides (a second array never).
        logger.exception("The in-request submission of sweep wave %s failed", job.uuid)
        return _interrupted(job, exc)
    if job.status == Job.Status.SUBMITTING:
        # Taken from this request meanwhile (it cannot be while the lease is held): as recorded.
        job.refresh_from_db(fields=["status", "slurm_job_id", "failure_message"])
    if job.slurm_job_id:
        return "submitted", ""
    if job.status in Job.TERMINAL:
        return "failed", job.failure_message
    if job.status == Job.Status.UNKNOWN:
        return "unknown", "The cluster did not answer in time; the hub finds the wave by its marker."
    return "queued", ""


def _interrupted(job: Job, exc: Exception) -> tuple[str, str]:
    """The request's submission broke off unexpectedly: the job goes to `unknown` now (not
    after the stuck check's wait), reconciliation finds it by its marker or, once the grace
    has passed without it, queues it again."""
    try:
        job.refresh_from_db(fields=["status", "slurm_job_id", "failure_message", "updated_at"])
        if job.status == Job.Status.SUBMITTING:
            transition(
                obj=job,
                to=Job.Status.UNKNOWN,
                transitions=Job.TRANSITIONS,
                action="job.submit_interrupted",
                fields={"unknown_since": timezone.now(), "last_error": f"{type(exc).__name__}: {exc}"[:2000]},
                data={"reason": "the request's submission broke off"},
            )
            enqueue("apps.jobs.tasks.jobs_reconcile")
    except Exception:
        logger.exception("Sweep wave %s left submitting: the stuck-submission check takes it", job.uuid)
        return "queued", ""
    if job.slurm_job_id:
        return "submitted", ""
    if job.status in Job.TERMINAL:
        return "failed", job.failure_message
    return "unknown", "The submission was interrupted; the hub finds the wave by its marker."


def _record_trials(
    sweep: Sweep, spec: Spec, suggestions: list[search.Suggestion], *, start: int, job: Job | None = None
) -> None:
    """The trials, in one INSERT; with ``job``, already in its array (task i is trial start + i)."""
    placed = {"job_id": job.pk, "state": T.PENDING} if job is not None else {}
    bulk_insert(
        Trial,
        [
            {
                "sweep_id": sweep.pk,
                "number": start + i,
                "params": s.params,
                "values": search.rendered(spec, s.params),
                "system_attrs": s.system_attrs,
                "task_id": i if job is not None else None,
                **placed,
            }
            for i, s in enumerate(suggestions)
        ],
    )


def sweep_launch(*, sweep_id: int) -> Job | None:
    """Put the trials not yet in an array into ONE job array: its script carries the trial
    script and the wave's parameter table; create the wave's Job (the jobs app submits and
    tracks it). Safe to run twice: a launch claims its wave number with a compare-and-swap.
    Talks to nobody: the caller submits the Job (tasks.sweep_launch at once)."""
    sweep = Sweep.objects.select_related("grant__cluster", "owner", "team").get(pk=sweep_id)
    if sweep.is_terminal:
        return None
    trials = list(sweep.trials.filter(state=T.CREATED, job__isnull=True).order_by("number"))
    if not trials:
        return None
    spec = spec_of(sweep)
    wave = sweep.waves
    # The parameter table travels inside the array's script, as the trial script does: the
    # wave costs its one sbatch and nothing else on the cluster before it.
    script = trialscript.array_script(
        spec=spec,
        script=sweep.script,
        folder=sweep.folder,
        wave=wave,
        size=len(trials),
        parallel=spec.parallel_trial_count,
        params=trialscript.params_file(spec, [(t.number, t.values) for t in trials]),
    )
    try:
        with transaction.atomic():
            if not Sweep.objects.filter(pk=sweep.pk, waves=wave, status=S.RUNNING).update(waves=wave + 1):
                raise Conflict("another launch took this wave")
            job = job_create(
                user=sweep.owner,
                cluster=sweep.cluster,
                name=f"{sweep.name}-{wave}"[:200],
                script=script,
                team=sweep.team,
                # No MLflow call before the wave's sbatch: its tasks log to their trials' runs,
                # and get the job's login with them, both made after it (advance._make_runs).
                own_run=False,
            )
            # All the wave's trials in one UPDATE, each given its task index: its number's
            # offset when the numbers run without a gap (always, for trials asked together; a
            # CASE of one WHEN per trial costs PostgreSQL milliseconds per hundred), else a CASE.
            first = trials[0].number
            if [t.number for t in trials] == list(range(first, first + len(trials))):
                task_id = F("number") - first
            else:
                task_id = Case(*[When(pk=t.pk, then=Value(i)) for i, t in enumerate(trials)])
            claimed = Trial.objects.filter(pk__in=[t.pk for t in trials], job__isnull=True, state=T.CREATED).update(
                job=job, state=T.PENDING, task_id=task_id
            )
            if claimed != len(trials):
                raise Conflict("a trial was taken meanwhile")
            audit_record(
                action="sweep.array_created",
                subject=sweep,
                after={"wave": wave, "job": str(job.uuid), "trials": [t.number for t in trials]},
            )
    except Conflict:
        return None
    except ValidationFailed as exc:
        _end(sweep, S.FAILED, f"Wave {wave} does not fit the grant: {exc.message}")
        return None
    return job


def _end(sweep: Sweep, status: str, message: str, *, actor=None, data: dict | None = None) -> Sweep:
    try:
        return transition(
            obj=sweep,
            to=status,
            transitions=Sweep.TRANSITIONS,
            action=f"sweep.{status}",
            actor=actor,
            fields={"message": message[:2000], "finished_at": timezone.now()},
            data={"message": message, **(data or {})},
        )
    except Conflict:
        sweep.refresh_from_db()
        return sweep


def cancel_rest(sweep: Sweep, *, state: str = T.CANCELLED) -> int:
    """Cancel every trial still waiting or running: the arrays' remaining tasks on Slurm (one
    scancel for all the arrays, which stops all of their tasks), then the rows. Returns the
    trials."""
    jobs = list(
        Job.objects.filter(trials__sweep=sweep, trials__state__in=Trial.ACTIVE, status__in=Job.ACTIVE_ON_CLUSTER)
        .exclude(slurm_job_id="")
        .distinct()
    )
    if jobs:
        try:
            with slurm_client(sweep.grant) as client:
                # One Slurm call for every array (scancel of an array stops all its tasks).
                client.cancel_many([job.slurm_job_id for job in jobs])
        except SlurmError as exc:
            raise Unavailable(f"Cluster {sweep.cluster.name} could not be reached to cancel the trials: {exc.message}")
    # Arrays not yet on Slurm are cancelled in the hub's queue, so they never get there.
    for job in Job.objects.filter(trials__sweep=sweep, status=Job.Status.QUEUED).distinct():
        try:
            transition(
                obj=job,
                to=Job.Status.CANCELLED,
                transitions=Job.TRANSITIONS,
                action="job.cancelled",
                fields={"finished_at": timezone.now()},
                data={"where": "hub queue", "sweep": str(sweep.uuid)},
            )
        except Conflict:
            pass
    return Trial.objects.filter(sweep=sweep, state__in=Trial.ACTIVE).update(state=state, finished_at=timezone.now())


def sweep_stop(*, user, sweep: Sweep) -> Sweep:
    if sweep.owner_id != user.pk:
        raise PermissionDenied("Only the sweep's owner can stop it.")
    if sweep.is_terminal:
        raise Conflict(f"The sweep already ended ({sweep.get_status_display().lower()}).")
    with transaction.atomic():
        audit_record(action="sweep.stop_requested", subject=sweep, actor=user, after={"status": sweep.status})
    cancelled = cancel_rest(sweep)
    sweep = _end(sweep, S.STOPPED, f"Stopped by {user.get_username()}.", actor=user, data={"cancelled": cancelled})
    close_runs(sweep)
    return sweep


def sweep_extend(*, user, sweep: Sweep, trials: int) -> Sweep:
    """Run ``trials`` more trials: maxTrialCount grows, and a sweep that ended runs again."""
    if sweep.owner_id != user.pk:
        raise PermissionDenied("Only the sweep's owner can extend it.")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ValidationFailed("Extend by a whole number of trials, at least 1.")
    spec = spec_of(sweep)
    total = sweep.max_trial_count + trials
    if spec.algorithm == "hyperband" and hyperband.exhausted(sweep.optuna_attrs.get(hyperband.KEY)):
        raise ValidationFailed(
            "Hyperband ran every one of its brackets; there is nothing left to run. Start a new sweep "
            "(with a larger r_l for more brackets)."
        )
    if spec.algorithm == "grid" and total > spec.grid_size():
        raise ValidationFailed(
            f"The grid has {spec.grid_size()} points and the sweep already runs {sweep.max_trial_count}; "
            f"it can grow by at most {spec.grid_size() - sweep.max_trial_count}."
        )
    grant_problems = _grant_problems(
        spec=spec,
        grant=sweep.grant,
        size=trials if not spec.adaptive else spec.parallel_trial_count,
        folder=sweep.folder,
    )
    if grant_problems:
        raise ValidationFailed("The extension does not fit your grant: " + _problems_text(grant_problems))
    with transaction.atomic():
        locked = Sweep.objects.select_for_update().get(pk=sweep.pk)
        if locked.is_terminal:
            transition(
                obj=locked,
                to=S.RUNNING,
                transitions=Sweep.TRANSITIONS,
                action="sweep.resumed",
                actor=user,
                fields={"finished_at": None, "message": ""},
            )
        Sweep.objects.filter(pk=sweep.pk).update(max_trial_count=total)
        audit_record(
            action="sweep.extended",
            subject=locked,
            actor=user,
            before={"max_trial_count": sweep.max_trial_count},
            after={"max_trial_count": total},
        )
        if not spec.adaptive:
            _ask_more(locked, spec, trials)
            enqueue("apps.sweeps.tasks.sweep_launch", sweep.pk)
    sweep.refresh_from_db()
    return sweep


def past_of(sweep: Sweep) -> list[search.Past]:
    return [
        search.Past(
            params=t.params,
            state=t.state,
            value=t.objective,
            intermediate={int(k): v for k, v in (t.intermediate or {}).items()},
            system_attrs=t.system_attrs,
        )
        for t in sweep.trials.order_by("number")
    ]


def _ask_more(sweep: Sweep, spec: Spec, count: int) -> None:
    """Ask Optuna (rebuilt from the rows) for ``count`` more trials and record them. Call
    inside a transaction holding the sweep's row."""
    if spec.algorithm == "hyperband":
        trials = list(sweep.trials.order_by("number"))
        suggestions, attrs = _hyperband_suggest(spec, trials, sweep.optuna_attrs, limit=count)
        Sweep.objects.filter(pk=sweep.pk).update(optuna_attrs=attrs)
        sweep.optuna_attrs = attrs
        _record_trials(sweep, spec, suggestions, start=len(trials))
        return
    past = past_of(sweep)
    suggestions, attrs = search.ask(spec, past, count, study_attrs=sweep.optuna_attrs)
    Sweep.objects.filter(pk=sweep.pk).update(optuna_attrs=attrs)
    _record_trials(sweep, spec, suggestions, start=len(past))
