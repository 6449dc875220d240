import csv
import json
from datetime import datetime, time

from django.core.paginator import Paginator
from django.http import HttpResponseForbidden, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from apps.core.errors import PermissionDenied

from .selectors import audit_event_list, user_can_read_audit

EXPORT_FIELDS = [
    "seq",
    "created_at",
    "actor_username",
    "action",
    "subject_type",
    "subject_id",
    "subject_text",
    "request_id",
    "before",
    "after",
    "prev_hash",
    "hash",
]


def _parse_when(value: str, *, end: bool) -> datetime | None:
    if not value:
        return None
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            return None
        moment = datetime.combine(day, time.max if end else time.min)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


def _filtered(request):
    params = request.GET
    filters = {
        "actor": params.get("actor", "").strip(),
        "action": params.get("action", "").strip(),
        "subject": params.get("subject", "").strip(),
        "since": params.get("since", "").strip(),
        "until": params.get("until", "").strip(),
    }
    errors = []
    since = _parse_when(filters["since"], end=False)
    until = _parse_when(filters["until"], end=True)
    if filters["since"] and since is None:
        errors.append("“From” is not a date (use YYYY-MM-DD or YYYY-MM-DD HH:MM).")
    if filters["until"] and until is None:
        errors.append("“To” is not a date (use YYYY-MM-DD or YYYY-MM-DD HH:MM).")
    qs = audit_event_list(
        user=request.user,
        actor=filters["actor"],
        action=filters["action"],
        subject=filters["subject"],
        since=since,
        until=until,
    )
    return qs, filters, errors


def audit_list(request):
    if not user_can_read_audit(request.user):
        return HttpResponseForbidden("Only administrators can read the audit trail.")
    qs, filters, errors = _filtered(request)
    page = Paginator(qs, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "audit/list.html",
        {"page": page, "filters": filters, "errors": errors, "query": query.urlencode()},
    )


class _Echo:
    def write(self, value):
        return value


def _export_rows(qs):
    for event in qs.order_by("seq").iterator(chunk_size=2000):
        row = {name: getattr(event, name) for name in EXPORT_FIELDS}
        row["created_at"] = event.created_at.isoformat()
        yield row


def audit_export(request, fmt: str):
    try:
        qs, _, _ = _filtered(request)
    except PermissionDenied as exc:
        return HttpResponseForbidden(exc.message)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%S")
    if fmt == "csv":
        writer = csv.writer(_Echo())

        def lines():
            yield writer.writerow(EXPORT_FIELDS)
            for row in _export_rows(qs):
                yield writer.writerow(
                    [json.dumps(row[f]) if f in ("before", "after") else row[f] for f in EXPORT_FIELDS]
                )

        response = StreamingHttpResponse(lines(), content_type="text/csv")
    else:
        response = StreamingHttpResponse(
            (json.dumps(row, sort_keys=True) + "\n" for row in _export_rows(qs)), content_type="application/x-ndjson"
        )
    response["Content-Disposition"] = f'attachment; filename="axle-audit-{stamp}.{"csv" if fmt == "csv" else "jsonl"}"'
    return response
