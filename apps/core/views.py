from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render

from apps.accounts.selectors import membership_list


def home(request):
    return render(request, "core/home.html", {"memberships": membership_list(user=request.user)})


# Sections of the dashboard that later parts of Axle fill in. Each renders the shared layout
# with an honest empty state until its feature lands.
SECTIONS = {
    "jobs": ("Jobs", "Training jobs you submit to Slurm clusters appear here."),
    "datasets": ("Datasets", "Versioned datasets registered on your clusters appear here."),
    "models": ("Models", "Registered model versions appear here."),
    "deployments": ("Deployments", "Deployment requests and live models appear here."),
    "clusters": ("Clusters", "Clusters you were granted access to appear here."),
}


def section(request, name: str):
    title, empty = SECTIONS[name]
    return render(request, "core/section.html", {"title": title, "empty": empty, "section": name})


@login_not_required
def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
