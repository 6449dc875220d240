"""The home page: a summary across the apps, so it sits above all of them (in the project,
not in ``apps.core``), and reads each app through its selectors only."""

from django.shortcuts import render

from apps.accounts.selectors import membership_list
from apps.clusters.selectors import grant_list, grant_requests_pending
from apps.jobs.selectors import job_list
from apps.serving.selectors import deployment_list, waiting_count
from apps.sweeps.selectors import sweep_list


def home(request):
    access_requests = grant_requests_pending(user=request.user)
    return render(
        request,
        "portal/dashboard.html",
        {
            "memberships": membership_list(user=request.user),
            "recent_jobs": job_list(user=request.user)[:5],
            "recent_sweeps": sweep_list(user=request.user)[:5],
            "grants": grant_list(user=request.user)[:10],
            "live": deployment_list(user=request.user, status="live")[:10],
            "inbox_count": waiting_count(user=request.user),
            "access_requests": access_requests[:10],
            "access_request_count": access_requests.count(),
        },
    )
