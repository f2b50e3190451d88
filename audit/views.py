"""The department admin's audit log and the department dashboard."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from audit.dashboard import dashboard_for_department, service_warnings
from audit.forms import AuditFilterForm
from audit.selectors import audit_event_list_for_admin

PAGE_SIZE = 50


@login_required
@require_GET
def event_list(request: HttpRequest) -> HttpResponse:
    """Forbidden to anyone but a department admin, like the user pages; an admin sees only their
    own department's events (site admins read all of them in the Django admin)."""
    if not request.user.is_department_admin:
        raise PermissionDenied("Only department admins can read the audit log.")
    form = AuditFilterForm(request.GET)
    form.is_valid()  # invalid filters are shown as errors and left out
    events = audit_event_list_for_admin(admin=request.user, **form.filters())
    page = Paginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
    filtered = any(value for key, value in request.GET.items() if key != "page")
    context = {"form": form, "page": page, "filtered": filtered}
    return render(request, "audit/event_list.html", context, status=400 if form.errors else 200)


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    """Every member of a department sees it: it holds counts and rates, no patient data, and a
    radiologist deciding how far to trust the AI needs exactly these numbers."""
    if not request.user.department_id:
        raise PermissionDenied("The dashboard is per department; site admins belong to none.")
    versions = dashboard_for_department(department_id=request.user.department_id)
    context = {"versions": versions, "service_warnings": service_warnings()}
    return render(request, "audit/dashboard.html", context)
