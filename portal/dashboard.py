"""The home page: a summary across the apps, so it sits above all of them (in the project,
not in ``apps.core``), and reads each app through its selectors only."""

from django.shortcuts import render

from apps.accounts.selectors import membership_list
from apps.clusters.selectors import grant_list, grant_requests_pending
from apps.core.live import is_live_poll, live_answer, live_version
from apps.jobs.selectors import job_list
from apps.serving.selectors import deployment_list, waiting_count
from apps.sweeps.selectors import sweep_list


def home(request):
    access_requests = grant_requests_pending(user=request.user)
    recent_jobs = list(job_list(user=request.user)[:5])
    recent_sweeps = list(sweep_list(user=request.user)[:5])
    # The job and sweep lists re-render when a state in them changes (apps.core.live).
    version = live_version(
        [(str(j.uuid), j.status, j.slurm_job_id) for j in recent_jobs],
        [(str(s.uuid), s.status, s.best_value) for s in recent_sweeps],
    )
    lists = {"recent_jobs": recent_jobs, "recent_sweeps": recent_sweeps, "live_version": version}
    if is_live_poll(request):
        return live_answer(
            request,
            version=version,
            final=False,
            render=lambda: render(request, "portal/_home_live.html", {**lists, "oob": True}),
        )
    # The nav's badge (apps.serving.context_processors) shows the same count: ask once.
    waiting = waiting_count(user=request.user)
    return render(
        request,
        "portal/dashboard.html",
        {
            **lists,
            "nav_approvals_waiting": waiting,
            "memberships": membership_list(user=request.user),
            "grants": grant_list(user=request.user)[:10],
            "live": deployment_list(user=request.user, status="live")[:10],
            "inbox_count": waiting,
            "access_requests": access_requests[:10],
            "access_request_count": access_requests.count(),
        },
    )
