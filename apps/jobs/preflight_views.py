"""The job form's "Before you submit" panel (htmx): see apps.jobs.preflight."""

from django.shortcuts import render
from django.views.decorators.http import require_POST

from apps.clusters.selectors import grant_usable_list

from .preflight import Preflight, job_preflight
from .views import _parse_parameters


@require_POST
def job_preflight_panel(request):
    """Ask Slurm about the form's script as it stands. Submits nothing, records nothing."""
    name = request.POST.get("cluster", "")
    grant = next((g for g in grant_usable_list(user=request.user) if g.cluster.name == name), None)
    if grant is None:
        result = Preflight(cluster=name, problems=[{"line": None, "message": "Pick a cluster you hold a grant on."}])
    else:
        params, errors = _parse_parameters(request.POST.get("parameters", ""))
        if errors:
            result = Preflight(cluster=name, problems=[{"line": None, "message": e} for e in errors])
        else:
            result = job_preflight(
                user=request.user,
                cluster=grant.cluster,
                script=request.POST.get("script", "").replace("\r\n", "\n"),
                parameters=params,
                name=request.POST.get("name", "").strip(),
            )
    return render(request, "jobs/_preflight.html", {"p": result})
