"""The department admin's audit log (page and CSV export) and the department dashboard."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC
from itertools import islice

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from audit.dashboard import dashboard_page
from audit.forms import AuditFilterForm
from audit.models import AuditEvent
from audit.selectors import audit_event_list_for_admin, audit_log_rows, audit_object_refs, object_label
from audit.services import audit_record
from diagnosis.downloads import private

PAGE_SIZE = 50
EXPORT_CHUNK = 1000  # rows read, named and written per round: memory stays flat for any size


@login_required
@require_GET
def event_list(request: HttpRequest) -> HttpResponse:
    """Forbidden to anyone but a department admin, like the user pages; an admin sees only their
    own department's events (site admins read all of them in the Django admin)."""
    _require_department_admin(request)
    form = AuditFilterForm(request.GET)
    form.is_valid()  # invalid filters are shown as errors and left out
    events = audit_event_list_for_admin(admin=request.user, **form.filters())
    page = Paginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
    filtered = any(value for key, value in request.GET.items() if key != "page")
    rows = audit_log_rows(events=page.object_list, department_id=request.user.department_id)
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "page": page, "rows": rows, "filtered": filtered, "export_query": query.urlencode()}
    return render(request, "audit/event_list.html", context, status=400 if form.errors else 200)


def _require_department_admin(request: HttpRequest) -> None:
    if not request.user.is_department_admin:
        raise PermissionDenied("Only department admins can read the audit log.")


EXPORT_COLUMNS = [
    "time (UTC)",
    "username",
    "user id",
    "action",
    "action code",
    "object",
    "object type",
    "object id",
    "IP address",
    "user agent",
    "method",
    "path",
    "detail",
]


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: a value starting with = + - @ (a typed username,
    a user agent) would otherwise run as a formula when the file is opened."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class _Echo:
    def write(self, value: str) -> str:
        return value


def _export_lines(events, department_id: int) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_COLUMNS)
    iterator = events.iterator(chunk_size=EXPORT_CHUNK)
    while chunk := list(islice(iterator, EXPORT_CHUNK)):
        refs = audit_object_refs(events=chunk, department_id=department_id)
        for event in chunk:
            row = [
                event.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                event.actor_username,
                event.actor_id or "",
                AuditEvent.Action(event.action).label if event.action in AuditEvent.Action.values else event.action,
                event.action,
                object_label(event, refs),
                event.object_type,
                event.object_id,
                event.ip_address or "",
                event.user_agent,
                event.method,
                event.path,
                json.dumps(event.detail, sort_keys=True) if event.detail else "",
            ]
            yield writer.writerow([_cell(value) for value in row])


@login_required
@require_GET
def event_export(request: HttpRequest) -> HttpResponse:
    """The log as CSV with the page's filters (every matching event, not one page), streamed in
    chunks. Exporting is itself an audit event (who took which rows), recorded before the first
    row is sent. Invalid filters answer the page with its errors and a 400, exporting nothing."""
    _require_department_admin(request)
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        return event_list(request)
    filters = form.filters()
    audit_record(
        action=AuditEvent.Action.FILE_DOWNLOAD,
        actor=request.user,
        object_type="audit_log",
        detail={"export": "csv", "filters": {key: str(value) for key, value in filters.items() if value}},
        request=request,
    )
    events = audit_event_list_for_admin(admin=request.user, **filters)
    response = StreamingHttpResponse(
        _export_lines(events, request.user.department_id), content_type="text/csv; charset=utf-8"
    )
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="xnet-audit-log-{stamp}.csv"'
    return private(response)


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    """Every member of a department sees it: it holds counts and rates, no patient data, and a
    radiologist deciding how far to trust the AI needs exactly these numbers."""
    if not request.user.department_id:
        raise PermissionDenied("The dashboard is per department; site admins belong to none.")
    return dashboard_page(request)  # date range, weekly axis, drift alarms: audit/dashboard.py
