from dataclasses import dataclass, field

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from apps.accounts.teams import team_choices, team_initial
from apps.clusters.selectors import grant_usable_list
from apps.core.errors import ApplicationError, NotFound
from apps.core.layout import layout
from apps.core.live import is_live_poll, live_answer, live_version

from . import selectors, services
from .models import PipelineRun, StepRun


def pipeline_list(request):
    grants = list(grant_usable_list(user=request.user))
    teams = list(team_choices(user=request.user))
    form = {"team": team_initial(teams), "name": "", "cluster": "", "repo_url": "", "branch": "main"}
    form["path"] = "axle-pipeline.yaml"
    error = ""
    if request.method == "POST":
        form = {k: request.POST.get(k, "").strip() for k in ("team", "name", "cluster", "repo_url", "branch", "path")}
        team = next((t for t in teams if t.name == form["team"]), None)
        grant = next((g for g in grants if g.cluster.name == form["cluster"]), None)
        if team is None:
            error = "Pick one of your teams."
        elif grant is None:
            error = "Pick a cluster you hold an active grant on."
        else:
            try:
                pipeline = services.pipeline_create(
                    user=request.user,
                    team=team,
                    name=form["name"],
                    grant=grant,
                    repo_url=form["repo_url"],
                    branch=form["branch"],
                    path=form["path"] or "axle-pipeline.yaml",
                )
            except ApplicationError as exc:
                error = exc.message
            else:
                messages.success(request, f"Pipeline “{pipeline.name}” registered.")
                return redirect("pipeline-detail", pipeline_id=pipeline.uuid)
    return render(
        request,
        "pipelines/list.html",
        {
            "pipelines": selectors.pipeline_list(user=request.user, team=request.GET.get("team", ""))[:200],
            "grants": grants,
            "teams": teams,
            "form": form,
            "error": error,
        },
    )


def _pipeline(request, pipeline_id):
    try:
        return selectors.pipeline_get(user=request.user, pipeline_id=pipeline_id)
    except NotFound:
        raise Http404("No such pipeline.") from None


def _run(request, run_id) -> PipelineRun:
    try:
        return selectors.pipeline_run_get(user=request.user, run_id=run_id)
    except NotFound:
        raise Http404("No such pipeline run.") from None


def pipeline_detail(request, pipeline_id):
    """The pipeline, its triggers and its runs. The runs table is a live region
    (apps.core.live): a run a push, a poll or a schedule starts appears without a reload."""
    pipeline = _pipeline(request, pipeline_id)
    runs = list(selectors.pipeline_run_list(user=request.user, pipeline=pipeline)[:100])
    version = live_version([(r.uuid, r.status, r.finished_at, r.failed_step) for r in runs])
    context = {"pipeline": pipeline, "runs": runs, "live_version": version}
    if is_live_poll(request):
        return live_answer(
            request,
            version=version,
            final=False,  # a trigger may start a run at any time
            render=lambda: render(request, "pipelines/_runs_live.html", {**context, "oob": True}),
        )
    return render(request, "pipelines/detail.html", context)


@require_POST
def pipeline_run(request, pipeline_id):
    pipeline = _pipeline(request, pipeline_id)
    commit = request.POST.get("commit", "").strip() or None
    try:
        run = services.pipeline_run_start(pipeline=pipeline, actor=request.user, trigger="user", commit=commit)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        run_id = exc.extra.get("run")
        if run_id:
            return redirect("pipeline-run-detail", run_id=run_id)
        return redirect("pipeline-detail", pipeline_id=pipeline.uuid)
    messages.success(request, f"Run #{run.number} started at {run.commit[:12]}.")
    return redirect("pipeline-run-detail", run_id=run.uuid)


@dataclass
class _Node:
    id: str
    kind: str
    label: str
    url: str = ""
    attrs: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.id


@dataclass
class _Edge:
    source: str
    target: str
    relation: str


@dataclass
class _Graph:
    focus: str
    nodes: dict
    edges: list


def _state(step: StepRun) -> str:
    if step.state == StepRun.State.SUBMITTED and step.job and step.job.status == "running":
        return "running"
    return step.state


def _drawing(steps: list[StepRun]) -> dict:
    nodes = {}
    for step in steps:
        nodes[step.name] = _Node(
            id=step.name,
            kind=f"step-{_state(step)}",
            label=step.name,
            url=reverse("job-detail", args=[step.job.uuid]) if step.job else "",
            attrs={"status": _state(step)},
        )
    edges = [_Edge(need, step.name, "afterok") for step in steps for need in step.needs]
    return layout(_Graph(focus="", nodes=nodes, edges=edges))


def _run_context(run: PipelineRun) -> dict:
    steps = selectors.step_list(run=run)
    for step in steps:
        step.shown_state = _state(step)
    return {"run": run, "steps": steps, "drawing": _drawing(steps), "active": _active(run, steps)}


def _active(run: PipelineRun, steps: list[StepRun]) -> bool:
    return not run.is_terminal or any(s.state == StepRun.State.SUBMITTED for s in steps)


def _run_version(run: PipelineRun, steps: list[StepRun]) -> str:
    return live_version(
        (run.status, run.message, run.failed_step, run.finished_at),
        [
            (s.name, s.state, s.attempt, s.job.status if s.job else None, s.job.slurm_job_id if s.job else None)
            + (s.message, s.finished_at, [(o.name, o.sha256) for o in s.outputs.all()])
            for s in steps
        ],
    )


def pipeline_run_detail(request, run_id):
    """The run's page; its live region (apps.core.live) follows the steps until the run ended
    and no step is left on Slurm, then the poller stops (286)."""
    run = _run(request, run_id)
    context = _run_context(run)
    version = _run_version(run, context["steps"])
    context.update(live_version=version, live_final=not context["active"])
    if is_live_poll(request):
        return live_answer(
            request,
            version=version,
            final=not context["active"],
            render=lambda: render(request, "pipelines/_run_live.html", {**context, "oob": True}),
        )
    return render(request, "pipelines/run.html", context)


@require_POST
def pipeline_run_cancel(request, run_id):
    run = _run(request, run_id)
    try:
        services.pipeline_run_cancel(user=request.user, run=run)
        messages.success(request, "The run is cancelled; its jobs were cancelled on Slurm.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("pipeline-run-detail", run_id=run.uuid)


@require_POST
def pipeline_run_retry(request, run_id):
    run = _run(request, run_id)
    try:
        services.pipeline_run_retry(user=request.user, run=run)
        messages.success(request, "The failed steps and what depends on them run again.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("pipeline-run-detail", run_id=run.uuid)
