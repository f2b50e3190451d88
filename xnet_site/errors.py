"""Friendly error pages and quiet logs for expected errors, also with DEBUG on.

The embedded defaults run with DEBUG on (scripts/run.sh, command 1), and there Django answers a
missing page with its technical 404, which lists every URL pattern of the site, and logs each
expected 403 with a full traceback, printed twice (Django's own console handler and ours). A
404 or a 403 is a normal answer (another department's case, a radiologist on an admin page),
not a fault: the pages show our templates and the log keeps one line without a traceback. A 500
is a fault and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse

from diagnosis.api.errors import page_not_found


class FriendlyNotFoundMiddleware:
    """With DEBUG on, answer a 404 with templates/404.html (JSON under /api/), not Django's
    technical page. With DEBUG off Django calls handler404 itself and this changes nothing.

    Two ways a 404 arises: a view raises Http404 (process_exception sees it), or no URL pattern
    matches, which Django turns into a response before any middleware sees an exception; then
    the request has no resolver_match and the response is Django's."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code == 404 and getattr(request, "resolver_match", None) is None and _debug():
            return page_not_found(request, Http404())
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, Http404) and _debug():
            return page_not_found(request, exception)
        return None


def _debug() -> bool:
    return settings.DEBUG  # read per request: tests switch it
