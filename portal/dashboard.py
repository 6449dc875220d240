"""The home page: a summary across the apps, so it sits above all of them (in the project,
not in ``apps.core``), and reads each app through its selectors only."""

from django.shortcuts import render

from apps.accounts.selectors import membership_list
from apps.clusters.selectors import grant_list, grant_requests_pending
from apps.core.live import is_live_poll, live_answer, live_version
from apps.jobs.selectors import job_list
from apps.serving.selectors import deployment_list, waiting_count
from apps.sweeps.selectors import sweep_list

# What the home page's lists show and their live version reads: every open home page polls
# every 5 s, so its jobs and sweeps are read without their scripts, specs and the joins the
# detail pages need (bench/portal_load.py).
JOB_COLUMNS = ("uuid", "name", "status", "slurm_job_id", "created_at", "cluster__name")
SWEEP_COLUMNS = ("uuid", "name", "status", "algorithm", "max_trial_count", "best_value", "created_at")


def home(request):
    access_requests = grant_requests_pending(user=request.user)
    jobs = job_list(user=request.user).select_related(None).select_related("cluster").prefetch_related(None)
    recent_jobs = list(jobs.only(*JOB_COLUMNS)[:5])
    recent_sweeps = list(sweep_list(user=request.user).select_related(None).only(*SWEEP_COLUMNS)[:5])
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
            # The name, version and environment of each: not the job, requester and approvals
            # the deployment pages join in.
            "live": deployment_list(user=request.user, status="live")
            .select_related(None)
            .select_related("environment", "model_version__model")
            .prefetch_related(None)[:10],
            "inbox_count": waiting,
            "access_requests": access_requests[:10],
            "access_request_count": access_requests.count(),
        },
    )
