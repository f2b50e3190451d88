"""Response headers every page and API answer carries, and the request body limit.

Pages and API answers carry patient names and record numbers: no browser or proxy cache may keep
them (Cache-Control: no-store), unless a view has said otherwise. Static files never reach this
middleware (WhiteNoise answers them first, with its own long cache).

Django reads a form body only when a view or the CSRF check asks for it, and then reads all of
it: a multipart body is written to a temporary file part by part, whatever its size
(DATA_UPLOAD_MAX_MEMORY_SIZE counts only the non-file fields). RequestBodyLimitMiddleware refuses
a request whose Content-Length is too large before anything reads it, so an anonymous 200 MB
POST to the login page costs neither disk nor memory. A body without a Content-Length (chunked)
is read by Django as empty, so it cannot go round the limit.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import Resolver404, resolve

from diagnosis.api.errors import error_body

# Addresses that take image files (URL names; tests/test_phi_request_limits.py checks they exist).
UPLOAD_ROUTES = frozenset(
    {"case_create", "case_upload", "api:case-images", "api:case-from-dicom", "dicomweb-stow", "dicomweb-stow-study"}
)
# Of those, the ones that authenticate API clients (tokens) in the view, before reading the body.
API_UPLOAD_ROUTES = frozenset({"api:case-images", "api:case-from-dicom", "dicomweb-stow", "dicomweb-stow-study"})
# Paths whose clients read JSON errors, not pages.
JSON_ERROR_PREFIXES = ("/api/", "/dicomweb/")


class SecurityHeadersMiddleware:
    """Cache-Control: no-store where a view set no caching of its own, and Permissions-Policy."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Cache-Control" not in response:
            response["Cache-Control"] = "no-store"
        if "Permissions-Policy" not in response:
            response["Permissions-Policy"] = settings.XNET_PERMISSIONS_POLICY
        return response


def _content_length(request: HttpRequest) -> int:
    # Django reads a missing or malformed Content-Length as 0 and then reads no body at all.
    try:
        return max(int(request.META.get("CONTENT_LENGTH") or 0), 0)
    except ValueError:
        return 0


def body_limit(request: HttpRequest) -> int:
    """The largest body this request may carry: an upload address takes images, from a signed-in
    user on the pages or from any API client (the API authenticates before it reads a body);
    every other address, and an anonymous page request, takes a form or a JSON document."""
    try:
        view_name = resolve(request.path_info).view_name
    except Resolver404:
        return settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if view_name in UPLOAD_ROUTES and (view_name in API_UPLOAD_ROUTES or request.user.is_authenticated):
        return settings.XNET_MAX_UPLOAD_REQUEST_BYTES
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


class RequestBodyLimitMiddleware:
    """413 for a body above its address's limit, before anything reads it. Place after
    AuthenticationMiddleware (the upload limit is for signed-in users) and before anything that
    reads the body: CsrfViewMiddleware reads the form in process_view, after every __call__."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        length = _content_length(request)
        # Below the smallest limit no address is refused: no URL resolving for ordinary requests.
        if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            limit = body_limit(request)
            if length > limit:
                return self._refuse(request, length, limit)
        return self.get_response(request)

    def _refuse(self, request: HttpRequest, length: int, limit: int) -> HttpResponse:
        message = f"The request is {_megabytes(length)}; the limit here is {_megabytes(limit)}."
        if request.path_info.startswith(JSON_ERROR_PREFIXES):
            return JsonResponse(error_body(status_code=413, code="too_large", message=message), status=413)
        return render(request, "413.html", {"message": message}, status=413)
