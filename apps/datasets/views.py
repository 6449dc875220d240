from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render

from apps.accounts.teams import team_choices, team_initial, team_pick
from apps.clusters.selectors import grant_usable_list
from apps.core.errors import ApplicationError, NotFound

from . import selectors, services
from .models import Dataset


def _dataset(request, dataset_id) -> Dataset:
    try:
        return selectors.dataset_get(user=request.user, id=dataset_id)
    except NotFound:
        raise Http404("No such dataset.") from None


def dataset_list(request):
    teams = list(team_choices(user=request.user))
    form = {"team": team_initial(teams), "name": "", "description": ""}
    errors = []
    if request.method == "POST":
        form = {k: request.POST.get(k, "").strip() for k in ("team", "name", "description")}
        try:
            team = team_pick(teams=teams, name=form["team"])
            dataset = services.dataset_create(
                user=request.user, team=team, name=form["name"], description=form["description"]
            )
        except ApplicationError as exc:
            errors.append(exc.message)
        else:
            messages.success(request, f"“{dataset.name}” in {team.name} created: register its first version.")
            return redirect("dataset-detail", dataset_id=dataset.uuid)
    q = request.GET.get("q", "")
    context = {
        "datasets": selectors.dataset_list(user=request.user, q=q),
        "teams": teams,
        "form": form,
        "errors": errors,
        "q": q,
    }
    return render(request, "datasets/list.html", context, status=400 if errors else 200)


def dataset_detail(request, dataset_id):
    dataset = _dataset(request, dataset_id)
    versions = list(selectors.dataset_version_list(user=request.user, dataset=dataset))
    context = {
        "dataset": dataset,
        "versions": versions,
        "env_name": selectors.env_name(dataset),
        "polling": any(not v.is_terminal for v in versions),
    }
    if request.headers.get("HX-Request") and request.GET.get("part") == "versions":
        return render(request, "datasets/_versions.html", context)
    grants = list(grant_usable_list(user=request.user))
    form = {"kind": "path", "cluster": grants[0].cluster.name if len(grants) == 1 else "", "path": "", "uri": ""}
    errors = []
    if request.method == "POST":
        form = {k: request.POST.get(k, "").strip() for k in ("kind", "cluster", "path", "uri")}
        grant = next((g for g in grants if g.cluster.name == form["cluster"]), None)
        try:
            if form["kind"] == "uri":
                version = services.dataset_version_register(user=request.user, dataset=dataset, uri=form["uri"])
            elif grant is None:
                raise ApplicationError("Pick a cluster you hold an active grant on; the checksum runs as your account.")
            else:
                version = services.dataset_version_register(
                    user=request.user, dataset=dataset, cluster=grant.cluster, path=form["path"]
                )
        except ApplicationError as exc:
            errors.append(exc.message)
        else:
            messages.success(
                request,
                f"Version {version.number} registered"
                + ("; it is being checksummed on the cluster." if version.path else "."),
            )
            return redirect("dataset-detail", dataset_id=dataset.uuid)
    context.update(grants=grants, form=form, errors=errors)
    return render(request, "datasets/detail.html", context, status=400 if errors else 200)


def dataset_version_detail(request, dataset_id, number):
    dataset = _dataset(request, dataset_id)
    try:
        version = selectors.dataset_version_by_number(user=request.user, dataset=dataset, number=number)
    except NotFound:
        raise Http404("No such version.") from None
    return render(
        request,
        "datasets/version.html",
        {"dataset": dataset, "version": version, "env_name": selectors.env_name(dataset)},
    )
