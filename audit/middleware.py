"""Records page and API views by their URL name, so the views of other apps need no audit code.

Only successful responses are events: a 2xx, or for a page's form POST the redirect of a form
that worked (a form with errors is shown again, sometimes with a 200). A 404 for another
department's object, a 400 for a bad upload or a refused sign-off records nothing (the attempt
is in the server's access log, not in the audit trail of what was seen and done).

Lists and searches are reads of patient data too: the worklist, the patient list, the
disagreements page and the API's lists record what was asked for (filters, search terms, page),
and the API lists the ids they answered with. A job read is recorded once it has a result:
a client polling a pending job adds no row per poll, nor does the case page's status polling.
Unlisted URLs (status polling, static files) cost nothing: no query, no insert.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve

from audit.models import AuditEvent
from audit.services import audit_record, current_request

logger = logging.getLogger(__name__)
A = AuditEvent.Action


@dataclass(frozen=True)
class Route:
    action: str
    object_type: str
    is_list: bool = False  # record the query (filters, search terms, page) instead of an object
    only_with_result: bool = False  # a job: recorded once it has finished, not while polled


GET, POST = "GET", "POST"

# (URL name with namespace, method) -> what a successful response means. A renamed URL would
# silently stop being audited: tests/test_audit_events.py checks every name here exists.
ROUTES: dict[tuple[str, str], Route] = {
    # Pages
    ("case_detail", GET): Route(A.CASE_VIEW, "case"),
    ("patient_detail", GET): Route(A.PATIENT_VIEW, "patient"),
    ("image_file", GET): Route(A.IMAGE_VIEW, "image"),
    ("prediction_heatmap", GET): Route(A.IMAGE_VIEW, "prediction"),
    ("case_create", POST): Route(A.UPLOAD, "case"),
    ("case_upload", POST): Route(A.UPLOAD, "case"),
    ("password_change", POST): Route(A.PASSWORD_CHANGE, "user"),
    ("report_sign", POST): Route(A.SIGN_OFF, "case"),
    ("report_addendum", POST): Route(A.ADDENDUM, "case"),
    ("report_pdf", GET): Route(A.REPORT_DOWNLOAD, "case"),
    ("worklist", GET): Route(A.CASE_LIST, "case", is_list=True),
    ("patient_list", GET): Route(A.PATIENT_LIST, "patient", is_list=True),
    ("disagreements", GET): Route(A.CASE_LIST, "case", is_list=True),
    # REST API
    ("api:case-detail", GET): Route(A.CASE_VIEW, "case"),
    ("api:patient-detail", GET): Route(A.PATIENT_VIEW, "patient"),
    ("api:image-detail", GET): Route(A.IMAGE_VIEW, "image"),
    ("api:image-file", GET): Route(A.FILE_DOWNLOAD, "image"),
    ("api:prediction-heatmap", GET): Route(A.FILE_DOWNLOAD, "prediction"),
    ("api:case-images", POST): Route(A.UPLOAD, "case"),
    ("api:case-from-dicom", POST): Route(A.UPLOAD, "case"),
    ("api:case-report", GET): Route(A.CASE_VIEW, "case"),
    ("api:case-report", POST): Route(A.SIGN_OFF, "case"),
    ("api:case-report-addenda", POST): Route(A.ADDENDUM, "case"),
    ("api:case-report-pdf", GET): Route(A.REPORT_DOWNLOAD, "case"),
    ("api:case-list", GET): Route(A.CASE_LIST, "case", is_list=True),
    ("api:patient-list", GET): Route(A.PATIENT_LIST, "patient", is_list=True),
    ("api:job-detail", GET): Route(A.RESULT_VIEW, "job", only_with_result=True),
    ("api:prediction-detail", GET): Route(A.RESULT_VIEW, "prediction"),
}
# Patients and cases created through the pages, the API or the admin are recorded when the row
# is saved (audit/signals.py), in the same transaction, not here.
UNFINISHED_JOB = ("pending", "running")
QUERY_KEYS_MAX, QUERY_VALUE_MAX_CHARS = 20, 100


def _succeeded(method: str, status: int, *, api: bool) -> bool:
    """A read is a 2xx. A page form POST is its redirect: a form with errors is re-rendered, and
    Django's own views (password change) do that with a 200. An API write is a 2xx."""
    if method == "GET" or api:
        return 200 <= status < 300
    return 300 <= status < 400


def _query(request: HttpRequest) -> dict[str, str]:
    """What a list was asked for: its filters and search terms (record numbers, names) and page."""
    items = [(key, value) for key, value in request.GET.items() if value][:QUERY_KEYS_MAX]
    return {key[:QUERY_VALUE_MAX_CHARS]: value[:QUERY_VALUE_MAX_CHARS] for key, value in items}


def _answer(response: HttpResponse) -> dict | None:
    """The API's answer as data (DRF keeps it on the response), or None for a page."""
    data = getattr(response, "data", None)
    return data if isinstance(data, dict) else None


def _list_detail(request: HttpRequest, response: HttpResponse) -> dict:
    detail: dict = {"query": _query(request), "list": request.resolver_match.url_name}
    data = _answer(response)
    if data is not None and isinstance(data.get("results"), list):
        detail["count"] = data.get("count")
        detail["ids"] = [item.get("id") for item in data["results"] if isinstance(item, dict)]
    return detail


def _object_id(request: HttpRequest, response: HttpResponse, route: Route) -> str:
    kwargs = request.resolver_match.kwargs
    if len(kwargs) == 1:
        return str(next(iter(kwargs.values())))
    for key in ("pk", f"{route.object_type}_id", "case_id"):
        if key in kwargs:
            return str(kwargs[key])
    if route.action == A.PASSWORD_CHANGE:
        return str(request.user.pk)
    # A created object (a new case) is where the form redirects to.
    location = urlsplit(response.get("Location", "")).path
    if location.startswith("/"):
        try:
            target = resolve(location)
        except Resolver404:
            return ""
        if len(target.kwargs) == 1:
            return str(next(iter(target.kwargs.values())))
    return ""


class AuditMiddleware:
    """Place after AuthenticationMiddleware. For API views, DRF has put the token's user on the
    request by the time the response comes back, so token calls are attributed to their user."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = current_request.set(request)
        try:
            response = self.get_response(request)
            self._record(request, response)
        finally:
            current_request.reset(token)
        return response

    def _record(self, request: HttpRequest, response: HttpResponse) -> None:
        try:
            match = request.resolver_match
            route = ROUTES.get((match.view_name, request.method)) if match is not None else None
            if route is None:
                return
            if not _succeeded(request.method, response.status_code, api=match.namespace == "api"):
                return
            user = getattr(request, "user", None)
            if user is None or not user.is_authenticated:
                return
            if route.only_with_result and (_answer(response) or {}).get("status") in UNFINISHED_JOB:
                return
            detail = {"status": response.status_code}
            if match.namespace == "api":
                detail["via"] = "api"
            if route.is_list:
                detail.update(_list_detail(request, response))
            audit_record(
                action=route.action,
                actor=user,
                object_type=route.object_type,
                object_id="" if route.is_list else _object_id(request, response, route),
                detail=detail,
                request=request,
            )
        except Exception:
            logger.exception("Audit middleware failed on %s", request.path)
