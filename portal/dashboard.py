"""The home page: a summary across the apps, so it sits above all of them (in the project,
not in ``apps.core``), and reads each app through its selectors only."""

from django.shortcuts import render

from apps.accounts.selectors import membership_list
from apps.clusters.selectors import grant_list
from apps.jobs.selectors import job_list
from apps.serving.selectors import deployment_list, inbox
from apps.sweeps.selectors import sweep_list


def home(request):
    return render(
        request,
        "portal/dashboard.html",
        {
            "memberships": membership_list(user=request.user),
            "recent_jobs": job_list(user=request.user)[:5],
            "recent_sweeps": sweep_list(user=request.user)[:5],
            "grants": grant_list(user=request.user)[:10],
            "live": deployment_list(user=request.user, status="live")[:10],
            "inbox_count": len(inbox(user=request.user)),
        },
    )
