"""The sweep form's "Before you submit" panel (htmx): see apps.sweeps.preflight."""

from django.shortcuts import render
from django.views.decorators.http import require_POST

from apps.clusters.selectors import grant_usable_list
from apps.jobs.preflight import Preflight

from .preflight import sweep_preflight


@require_POST
def sweep_preflight_panel(request):
    """Ask Slurm about the sweep's first job array as the form stands. Submits nothing."""
    name = request.POST.get("cluster", "")
    grant = next((g for g in grant_usable_list(user=request.user) if g.cluster.name == name), None)
    if grant is None:
        result = Preflight(
            cluster=name, problems=[{"path": "cluster", "message": "Pick a cluster you hold a grant on."}]
        )
    else:
        text = request.POST.get("spec", "").replace("\r\n", "\n")
        result = sweep_preflight(user=request.user, cluster=grant.cluster, spec_text=text)
    return render(request, "jobs/_preflight.html", {"p": result})
