from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse

from apps.accounts.team_views import TeamAssetListView, found_or_404
from apps.core.errors import ApplicationError
from apps.core.models import parse_uuid

from . import placements, selectors, services
from .models import ModelVersion


class ModelListView(TeamAssetListView):
    template_name = "registry/list.html"
    noun, plural = "model", "models"

    list_assets = staticmethod(selectors.registered_model_list)
    create_asset = staticmethod(services.registered_model_create)

    def asset_url(self, asset):
        return reverse("model-detail", args=[asset.name])

    def decorate(self, request, assets):
        live = placements.live_by_model(
            placements.live_placements(ModelVersion.objects.filter(model__in=[a.pk for a in assets]))
        )
        for a in assets:
            a.live = live.get(a.pk, [])
        return assets

    def version_url(self, asset, number):
        return self.asset_url(asset) + f"#v{number}"

    def created_message(self, asset, team):
        return f"Model “{asset.name}” created: register a version from a completed job."


model_list = ModelListView.as_view()


def model_detail(request, name):
    model = found_or_404(selectors.registered_model_get, "No such model.", user=request.user, name=name)
    versions = list(selectors.model_version_list(user=request.user, model=model))
    columns = selectors.metric_columns(versions)
    live = placements.live_placements(selectors.model_version_list(user=request.user, model=model))
    rows = [(v, [(v.metrics or {}).get(c) for c in columns], live.get(v.pk, [])) for v in versions]
    context = {"model": model, "versions": versions, "columns": columns, "rows": rows}
    return render(request, "registry/detail.html", context)


def model_register(request):
    """The job page's "Register model" form posts here: job (uuid) and name. GET shows the
    same form, for a link with ?job=<uuid>. The sweep page's best trial posts sweep (uuid),
    trial (its number) and name instead: one click registers that trial's model."""
    data = request.POST if request.method == "POST" else request.GET
    form = {"job": data.get("job", "").strip(), "name": data.get("name", "").strip()}
    error = ""
    job = None
    if request.method != "POST":
        job = selectors.visible_jobs(user=request.user).filter(uuid=parse_uuid(form["job"])).first()
        return render(request, "registry/register.html", {"form": form, "job": job, "error": ""})
    if data.get("sweep"):
        return _register_trial(request, data)
    try:
        job = selectors.job_for_registration(user=request.user, id=form["job"])
        version = services.model_version_register(user=request.user, model_name=form["name"], job=job)
    except ApplicationError as exc:
        error = exc.message
    else:
        messages.success(request, f"Job {job.name} registered as {version.model.name} version {version.number}.")
        return redirect(reverse("model-detail", args=[version.model.name]) + f"#v{version.number}")
    return render(request, "registry/register.html", {"form": form, "job": job, "error": error}, status=400)


def _register_trial(request, data):
    sweep_id = data.get("sweep", "").strip()
    try:
        trial = selectors.trial_for_registration(user=request.user, sweep_id=sweep_id, number=data.get("trial", ""))
        version = services.model_version_register_trial(user=request.user, model_name=data.get("name", ""), trial=trial)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        if parse_uuid(sweep_id) is None:
            return redirect("sweep-list")
        return redirect("sweep-detail", sweep_id=sweep_id)
    messages.success(
        request,
        f"Trial {trial.number} of sweep {trial.sweep.name} registered as {version.model.name} "
        f"version {version.number}.",
    )
    return redirect(reverse("model-detail", args=[version.model.name]) + f"#v{version.number}")
