"""Records page and API views by their URL name, so the views of other apps need no audit code.

Only successful responses are events: a 2xx, or for a page's form POST the redirect of a form
that worked (a form with errors is shown again, sometimes with a 200). A 404 for another
department's object, a 400 for a bad upload or a refused sign-off records nothing (the attempt
is in the server's access log, not in the audit trail of what was seen and done).
Unlisted URLs (the worklist, status polling, static files) cost nothing: no query, no insert.
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
}


def _succeeded(method: str, status: int, *, api: bool) -> bool:
    """A read is a 2xx. A page form POST is its redirect: a form with errors is re-rendered, and
    Django's own views (password change) do that with a 200. An API write is a 2xx."""
    if method == "GET" or api:
        return 200 <= status < 300
    return 300 <= status < 400


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
            detail = {"status": response.status_code}
            if match.namespace == "api":
                detail["via"] = "api"
            audit_record(
                action=route.action,
                actor=user,
                object_type=route.object_type,
                object_id=_object_id(request, response, route),
                detail=detail,
                request=request,
            )
        except Exception:
            logger.exception("Audit middleware failed on %s", request.path)
