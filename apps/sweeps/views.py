from django.contrib import messages
from django.core.cache import cache
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from apps.clusters.selectors import grant_usable_list
from apps.core.errors import ApplicationError, NotFound
from apps.core.live import is_live_poll, live_answer, live_version

from . import search, selectors, services
from .models import Sweep
from .spec import SpecError

# Optuna's importances fit a random forest: bounded so the page stays quick.
IMPORTANCE_TRIALS = 500
TEMPLATE = """apiVersion: kubeflow.org/v1beta1
kind: Experiment
metadata:
  name: digits-lr
spec:
  objective:
    type: maximize
    goal: 0.99
    objectiveMetricName: val_accuracy
  algorithm:
    algorithmName: random
    algorithmSettings:
      - name: random_state
        value: "1"
  earlyStopping:
    algorithmName: medianstop
    algorithmSettings:
      - name: min_trials_required
        value: "2"
      - name: start_step
        value: "2"
  parallelTrialCount: 2
  maxTrialCount: 6
  maxFailedTrialCount: 2
  parameters:
    - name: lr
      parameterType: double
      feasibleSpace:
        min: "0.001"
        max: "0.3"
        distribution: logUniform
  trialTemplate:
    trialParameters:
      - name: learningRate
        reference: lr
    trialSpec: |
      #!/bin/bash
      #SBATCH --partition=debug
      #SBATCH --time=00:10:00
      #SBATCH --mem=500M
      python train.py --lr=${trialParameters.learningRate}
"""


def _grant_for(request, grants, name):
    return next((g for g in grants if g.cluster.name == name), None)


def sweep_list(request):
    status = request.GET.get("status", "")
    sweeps = selectors.sweep_list(user=request.user, status=status)[:200]
    return render(
        request,
        "sweeps/list.html",
        {
            "sweeps": sweeps,
            "status": status,
            "statuses": Sweep.Status.choices,
            "grants": grant_usable_list(user=request.user),
        },
    )


def sweep_new(request):
    grants = list(grant_usable_list(user=request.user))
    context = {"grants": grants, "form": {"spec": TEMPLATE, "cluster": ""}, "problems": []}
    if request.method == "POST":
        form = {k: request.POST.get(k, "").replace("\r\n", "\n") for k in ("spec", "cluster")}
        context["form"] = form
        grant = _grant_for(request, grants, form["cluster"])
        if grant is None:
            context["problems"] = [{"path": "cluster", "message": "Pick a cluster you hold an active grant on."}]
        elif request.POST.get("action") == "validate":
            context["result"] = services.sweep_validate(
                user=request.user, cluster=grant.cluster, spec_text=form["spec"]
            )
            context["problems"] = context["result"]["problems"]
        else:
            try:
                # As the API's POST: the first wave goes to Slurm from this request when the
                # cluster is at hand, else a worker sends it.
                sweep = services.sweep_create(
                    user=request.user, cluster=grant.cluster, spec_text=form["spec"], submit_now=True
                )
            except ApplicationError as exc:
                context["problems"] = exc.extra.get("problems") or [{"path": "", "message": exc.message}]
            else:
                created = f"Sweep “{sweep.name}” created: {sweep.max_trial_count} trials"
                launch = getattr(sweep, "launch", "queued")
                if launch == "failed":
                    messages.error(request, f"{created}, but its first trials were not sent: {sweep.launch_message}")
                elif launch == "submitted":
                    messages.success(request, f"{created}; its first trials are on the cluster.")
                elif launch == "unknown":
                    late = "the cluster did not answer in time: its trials are looked for"
                    messages.warning(request, f"{created}; {late}.")
                else:
                    messages.success(request, f"{created}; its first trials are queued.")
                return redirect("sweep-detail", sweep_id=sweep.uuid)
    return render(request, "sweeps/new.html", context)


@require_POST
def sweep_check(request):
    """Live validation of the form (htmx): the problems of the spec as typed. Records nothing."""
    grants = list(grant_usable_list(user=request.user))
    grant = _grant_for(request, grants, request.POST.get("cluster", ""))
    text = request.POST.get("spec", "").replace("\r\n", "\n")
    if grant is None:
        from .spec import parse

        try:
            parse(text)
            result = {"ok": False, "problems": [{"path": "cluster", "message": "Pick a cluster."}]}
        except SpecError as exc:
            result = {"ok": False, "problems": exc.problems}
    else:
        result = services.sweep_validate(user=request.user, cluster=grant.cluster, spec_text=text)
    return render(request, "sweeps/_validation.html", {"result": result, "problems": result["problems"]})


def _sweep(request, sweep_id) -> Sweep:
    try:
        return selectors.sweep_get(user=request.user, sweep_id=sweep_id)
    except NotFound:
        raise Http404("No such sweep.") from None


def _importances(sweep: Sweep, spec) -> list[tuple[str, float]]:
    """Optuna's importances, computed once per number of succeeded trials (the page is
    polled every few seconds; the forest is refit only when there is something new)."""
    succeeded = sweep.trials.filter(state="succeeded").count()
    key = f"sweep-importances:{sweep.uuid}:{succeeded}:{sweep.max_trial_count}"
    found = cache.get(key)
    if found is None:
        found = sorted(
            search.importances(spec, services.past_of(sweep)[:IMPORTANCE_TRIALS]).items(), key=lambda kv: -kv[1]
        )
        cache.set(key, found, 3600)
    return found


def _sweep_version(sweep: Sweep) -> str:
    """What the live part of the page shows, as a digest: the sweep's own fields and each
    trial's (with its array's Slurm id and the models registered from it). Computed with two
    queries, so a poll that finds nothing new costs those and no more."""
    trials = list(
        sweep.trials.order_by("number", "model_versions__pk").values_list(
            "number",
            "state",
            "objective",
            "metrics",
            "intermediate",
            "stop_reason",
            "started_at",
            "finished_at",
            "task_id",
            "job__slurm_job_id",
            "model_versions__pk",
        )
    )
    return live_version(
        [sweep.status, sweep.message, sweep.best_value, sweep.max_trial_count, sweep.mlflow_run_id, sweep.finished_at],
        trials,
    )


def sweep_detail(request, sweep_id):
    sweep = _sweep(request, sweep_id)
    version = _sweep_version(sweep)
    if is_live_poll(request) and request.GET.get("live") == version:
        # Nothing new: answered before the charts and importances are computed.
        return live_answer(request, version=version, final=sweep.is_terminal, render=HttpResponse)
    spec = services.spec_of(sweep)
    trials = list(selectors.trial_list(sweep=sweep).prefetch_related("model_versions__model"))
    counts: dict[str, int] = {}
    for t in trials:
        t.additional = [(t.metrics or {}).get(m) for m in spec.additional_metrics]
        label = t.get_state_display().lower()
        counts[label] = counts.get(label, 0) + 1
    best = None
    for t in trials:
        if t.state == "succeeded" and (best is None or spec.is_better(t.objective, best.objective)):
            best = t
    context = {
        "sweep": sweep,
        "spec": spec,
        "trials": trials,
        "counts": sorted(counts.items()),
        "best": best,
        "names": [p.name for p in spec.parameters],
        "chart": selectors.best_so_far(sweep=sweep, maximize=spec.maximize),
        "parallel": selectors.parallel_coordinates(sweep=sweep, names=[p.name for p in spec.parameters]),
        "is_owner": sweep.owner_id == request.user.pk,
        "importances": _importances(sweep, spec),
        "live_version": version,
        "live_final": sweep.is_terminal,
    }
    if is_live_poll(request):
        return live_answer(
            request,
            version=version,
            final=sweep.is_terminal,
            render=lambda: render(request, "sweeps/_live_answer.html", {**context, "oob": True}),
        )
    return render(request, "sweeps/detail.html", context)


@require_POST
def sweep_stop(request, sweep_id):
    sweep = _sweep(request, sweep_id)
    try:
        services.sweep_stop(user=request.user, sweep=sweep)
        messages.success(request, "The sweep is stopped; its remaining trials were cancelled.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("sweep-detail", sweep_id=sweep.uuid)


@require_POST
def sweep_extend(request, sweep_id):
    sweep = _sweep(request, sweep_id)
    try:
        trials = int(request.POST.get("trials", ""))
    except ValueError:
        messages.error(request, "Extend by a whole number of trials.")
        return redirect("sweep-detail", sweep_id=sweep.uuid)
    try:
        services.sweep_extend(user=request.user, sweep=sweep, trials=trials)
        messages.success(request, f"The sweep runs {trials} more trials.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("sweep-detail", sweep_id=sweep.uuid)
