from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render

from apps.accounts.selectors import membership_list


def home(request):
    # The dashboard reads other apps through their selectors only.
    from apps.clusters.selectors import grant_list
    from apps.jobs.selectors import job_list
    from apps.serving.selectors import deployment_list, inbox

    return render(
        request,
        "core/home.html",
        {
            "memberships": membership_list(user=request.user),
            "recent_jobs": job_list(user=request.user)[:5],
            "grants": grant_list(user=request.user)[:10],
            "live": deployment_list(user=request.user, status="live")[:10],
            "inbox_count": len(inbox(user=request.user)),
        },
    )


@login_not_required
def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
