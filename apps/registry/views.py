from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse

from apps.accounts.teams import team_choices, team_initial, team_pick
from apps.core.errors import ApplicationError, NotFound
from apps.core.models import parse_uuid

from . import selectors, services


def model_list(request):
    teams = list(team_choices(user=request.user))
    form = {"team": team_initial(teams), "name": "", "description": ""}
    errors = []
    if request.method == "POST":
        form = {k: request.POST.get(k, "").strip() for k in ("team", "name", "description")}
        try:
            team = team_pick(teams=teams, name=form["team"])
            model = services.registered_model_create(
                user=request.user, team=team, name=form["name"], description=form["description"]
            )
        except ApplicationError as exc:
            errors.append(exc.message)
        else:
            messages.success(request, f"Model “{model.name}” created: register a version from a completed job.")
            return redirect("model-detail", name=model.name)
    q = request.GET.get("q", "")
    context = {
        "models": selectors.registered_model_list(user=request.user, q=q),
        "teams": teams,
        "form": form,
        "errors": errors,
        "q": q,
    }
    return render(request, "registry/list.html", context, status=400 if errors else 200)


def _metric(value) -> tuple[str, str] | None:
    """(shown, exact) for a metric cell: four significant digits side by side, all on hover."""
    if value is None:
        return None
    return f"{value:.4g}", repr(value)


def model_detail(request, name):
    try:
        model = selectors.registered_model_get(user=request.user, name=name)
    except NotFound:
        raise Http404("No such model.") from None
    versions = list(selectors.model_version_list(user=request.user, model=model))
    columns = selectors.metric_columns(versions)
    rows = [(v, [_metric((v.metrics or {}).get(c)) for c in columns]) for v in versions]
    context = {"model": model, "versions": versions, "columns": columns, "rows": rows}
    return render(request, "registry/detail.html", context)


def model_register(request):
    """The job page's "Register model" form posts here: job (uuid) and name. GET shows the
    same form, for a link with ?job=<uuid>."""
    data = request.POST if request.method == "POST" else request.GET
    form = {"job": data.get("job", "").strip(), "name": data.get("name", "").strip()}
    error = ""
    job = None
    if request.method != "POST":
        job = selectors.visible_jobs(user=request.user).filter(uuid=parse_uuid(form["job"])).first()
        return render(request, "registry/register.html", {"form": form, "job": job, "error": ""})
    try:
        job = selectors.job_for_registration(user=request.user, id=form["job"])
        version = services.model_version_register(user=request.user, model_name=form["name"], job=job)
    except ApplicationError as exc:
        error = exc.message
    else:
        messages.success(request, f"Job {job.name} registered as {version.model.name} version {version.number}.")
        return redirect(reverse("model-detail", args=[version.model.name]) + f"#v{version.number}")
    return render(request, "registry/register.html", {"form": form, "job": job, "error": error}, status=400)
