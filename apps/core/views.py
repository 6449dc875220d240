from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render

from apps.accounts.selectors import membership_list


def home(request):
    return render(request, "core/home.html", {"memberships": membership_list(user=request.user)})


@login_not_required
def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
