"""One error shape for every API failure, so external apps parse a single format.

    {"error": {"status": 404, "code": "not_found", "message": "Not found.", "fields": {}}}

DRF's own exceptions (validation, authentication, permissions, 404, 405, 415, parse errors,
throttling) and Django's ValidationError raised by services all come out this way, and so do
the failures that mean something to a client: a body over Django's size limit (413), a database
that does not answer (503 with Retry-After). Anything else is a bug: Django logs it and calls
`server_error`, which answers a 500 in this shape under /api/ (HTML pages keep their templates).
The handlers at the end are Django's handler400/403/404/500 (xnet_site/urls.py): errors raised
outside a DRF view, in middleware or by the URL resolver, get the same shape under /api/.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import (
    ObjectDoesNotExist,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)

NON_FIELD_KEYS = {api_settings.NON_FIELD_ERRORS_KEY, "__all__"}
# A client told the database is down retries after this many seconds (Retry-After).
RETRY_AFTER_SECONDS = 30


class ServiceUnavailable(exceptions.APIException):
    """503: PostgreSQL refused or dropped the connection; nothing was done, retrying is safe."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = f"The database is not answering; nothing was changed. Try again in {RETRY_AFTER_SECONDS} seconds."
    default_code = "database_unavailable"


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"  # as xnet_site.security's limit on Content-Length and the upload check


def error_body(*, status_code: int, code: str, message: str, fields: dict[str, list[str]] | None = None) -> dict:
    return {"error": {"status": status_code, "code": code, "message": message, "fields": fields or {}}}


def _flatten(detail: Any, prefix: str = "") -> Iterable[tuple[str, str, str | None]]:
    """Yield (field path, message, code) from DRF's nested error detail; '' is a non-field error."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            key = str(key)
            path = "" if key in NON_FIELD_KEYS and not prefix else f"{prefix}.{key}" if prefix else key
            yield from _flatten(value, path)
    elif isinstance(detail, list | tuple):
        for index, item in enumerate(detail):
            nested = isinstance(item, dict | list | tuple)
            yield from _flatten(item, f"{prefix}.{index}" if nested and prefix else prefix)
    else:
        yield prefix, str(detail), getattr(detail, "code", None)


def _from_django_validation_error(exc: DjangoValidationError) -> exceptions.ValidationError:
    """Services raise Django's ValidationError; give it DRF's shape, codes included."""
    if hasattr(exc, "error_dict"):
        detail: Any = {
            field: [exceptions.ErrorDetail(message, error.code) for error in errors for message in error.messages]
            for field, errors in exc.error_dict.items()
        }
    else:
        detail = [exceptions.ErrorDetail(message, error.code) for error in exc.error_list for message in error.messages]
    return exceptions.ValidationError(detail)


def _validation_body(exc: exceptions.ValidationError) -> dict:
    general: list[str] = []
    fields: dict[str, list[str]] = {}
    codes: list[str | None] = []
    for field, message, code in _flatten(exc.detail):
        codes.append(code)
        if field:
            fields.setdefault(field, []).append(message)
        else:
            general.append(message)
    parts = general + [f"{field}: {message}" for field, messages in fields.items() for message in messages]
    message = " ".join(parts) if len(parts) == 1 else "; ".join(parts) if parts else "Invalid input."
    # A single error keeps its specific code (e.g. "too_large" for an upload), so a client can
    # branch on it; several errors are just "invalid".
    code = codes[0] if len(codes) == 1 and codes[0] else "invalid"
    return error_body(status_code=status.HTTP_400_BAD_REQUEST, code=code, message=message, fields=fields)


def _from_django_failure(exc: Exception) -> exceptions.APIException | None:
    """The Django-level failures a client can act on, as API errors; None for anything else."""
    if isinstance(exc, RequestDataTooBig):
        # A multipart form's fields besides its files count against this limit too.
        limit_mb = settings.DATA_UPLOAD_MAX_MEMORY_SIZE / (1024 * 1024)
        return RequestTooLarge(f"The request's data besides files is over the limit of {limit_mb:.1f} MB.")
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return exceptions.ParseError(f"{exc}", code="too_many_fields")
    if isinstance(exc, SuspiciousOperation):
        return exceptions.ParseError("The request was refused as malformed.", code="bad_request")
    if isinstance(exc, OperationalError | InterfaceError):
        # Connection refused or lost (also a deadlock or cancelled statement, which a retry
        # clears too). Logged here because the client's 503 hides it from Django's error log.
        logger.error("Database unavailable: %s", exc, exc_info=exc)
        return ServiceUnavailable()
    return None


def _body(exc: exceptions.APIException, status_code: int) -> dict:
    if isinstance(exc, exceptions.ValidationError):
        return _validation_body(exc)
    detail = getattr(exc, "detail", None)
    message = str(detail) if isinstance(detail, str) else " ".join(m for _, m, _ in _flatten(detail)) or str(exc)
    code = detail.code if isinstance(detail, exceptions.ErrorDetail) and detail.code else "error"
    return error_body(status_code=status_code, code=code, message=message)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        exc = _from_django_validation_error(exc)
    elif isinstance(exc, Http404 | ObjectDoesNotExist):
        exc = exceptions.NotFound()
    else:
        exc = _from_django_failure(exc) or exc

    # DRF's handler sets the headers that go with some errors (WWW-Authenticate, Retry-After)
    # and rolls back the request's atomic block; only the body is replaced.
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    response.data = _body(exc, response.status_code)
    if isinstance(exc, ServiceUnavailable):
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


# Django's error handlers (handler400/403/404/500 in xnet_site/urls.py) -----------------------


def _is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/")


def _json_error(exc: exceptions.APIException) -> JsonResponse:
    response = JsonResponse(_body(exc, exc.status_code), status=exc.status_code)
    if isinstance(exc, ServiceUnavailable):
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


@csrf_exempt  # it changes nothing; without this a POST with a session cookie got an HTML CSRF 403
def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any address under /api/ that names no endpoint, whatever the method: a 404 in the same
    format, not HTML."""
    return _json_error(exceptions.NotFound("There is no API endpoint at this address."))


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not _is_api(request):
        return defaults.bad_request(request, exception)
    return _json_error(_from_django_failure(exception) or exceptions.ParseError("The request was malformed."))


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not _is_api(request):
        return defaults.permission_denied(request, exception)
    return _json_error(exceptions.PermissionDenied(str(exception) or None))


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not _is_api(request):
        return defaults.page_not_found(request, exception)
    return not_found(request)


def server_error(request: HttpRequest) -> HttpResponse:
    """An exception no view handled (Django has logged it): a database outage is a 503 with
    Retry-After, anything else a 500, both without the traceback."""
    if not _is_api(request):
        return defaults.server_error(request)
    if isinstance(sys.exc_info()[1], OperationalError | InterfaceError):
        return _json_error(ServiceUnavailable())
    message = "The server failed on this request; the error was logged for the administrators."
    return JsonResponse(error_body(status_code=500, code="server_error", message=message), status=500)
