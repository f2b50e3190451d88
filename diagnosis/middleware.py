"""A full disk is an outage the user should hear about in words, not a 500 page.

Any view (page or API) whose write hits ENOSPC/EDQUOT answers 507 Insufficient Storage: under
/api/ in the API's one error shape, on pages with the 507 page. What was written is gone already
(diagnosis.storage removes partial files; the upload's transaction rolled back). The path and
the errno go to the log only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from diagnosis.api.errors import error_body
from diagnosis.services import is_disk_full

logger = logging.getLogger(__name__)

DISK_FULL_CODE = "storage_full"
DISK_FULL_USER_MESSAGE = (
    "The server's storage is full, so nothing was saved. Try again later; administrators have been told."
)


class DiskFullMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_disk_full(exception):
            return None
        logger.error("Disk full while serving %s %s", request.method, request.path, exc_info=exception)
        if request.path.startswith("/api/"):
            body = error_body(status_code=507, code=DISK_FULL_CODE, message=DISK_FULL_USER_MESSAGE)
            response: HttpResponse = JsonResponse(body, status=507)
        else:
            response = render(request, "507.html", {"message": DISK_FULL_USER_MESSAGE}, status=507)
        response["Retry-After"] = "300"
        return response
