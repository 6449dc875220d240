from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse

from apps.accounts.team_views import TeamAssetListView, found_or_404
from apps.clusters.selectors import grant_usable_list
from apps.core.errors import ApplicationError

from . import selectors, services
from .models import Dataset


def _dataset(request, dataset_id) -> Dataset:
    return found_or_404(selectors.dataset_get, "No such dataset.", user=request.user, id=dataset_id)


class DatasetListView(TeamAssetListView):
    template_name = "datasets/list.html"
    noun, plural = "dataset", "datasets"

    list_assets = staticmethod(selectors.dataset_list)
    create_asset = staticmethod(services.dataset_create)

    def asset_url(self, asset):
        return reverse("dataset-detail", args=[asset.uuid])

    def version_url(self, asset, number):
        return reverse("dataset-version-detail", args=[asset.uuid, number])

    def created_message(self, asset, team):
        return f"“{asset.name}” in {team.name} created: register its first version."


dataset_list = DatasetListView.as_view()


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
    version = found_or_404(
        selectors.dataset_version_by_number, "No such version.", user=request.user, dataset=dataset, number=number
    )
    return render(
        request,
        "datasets/version.html",
        {"dataset": dataset, "version": version, "env_name": selectors.env_name(dataset)},
    )
