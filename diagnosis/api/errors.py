"""One error shape for every API failure, so external apps parse a single format.

    {"error": {"status": 404, "code": "not_found", "message": "Not found.", "fields": {}}}

DRF's own exceptions (validation, authentication, permissions, 404, 405, 415, parse errors,
throttling) and Django's ValidationError raised by services all come out this way. Anything
else is a bug: it is left to Django, which logs it and answers 500.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

NON_FIELD_KEYS = {api_settings.NON_FIELD_ERRORS_KEY, "__all__"}


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


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        exc = _from_django_validation_error(exc)
    elif isinstance(exc, Http404 | ObjectDoesNotExist):
        exc = exceptions.NotFound()

    # DRF's handler sets the headers that go with some errors (WWW-Authenticate, Retry-After)
    # and rolls back the request's atomic block; only the body is replaced.
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = _validation_body(exc)
        return response

    detail = getattr(exc, "detail", None)
    message = str(detail) if isinstance(detail, str) else " ".join(m for _, m, _ in _flatten(detail)) or str(exc)
    code = detail.code if isinstance(detail, exceptions.ErrorDetail) and detail.code else "error"
    response.data = error_body(status_code=response.status_code, code=code, message=message)
    return response


def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any address under /api/v1/ that names no endpoint: a 404 in the same format, not HTML."""
    body = error_body(status_code=404, code="not_found", message="There is no API endpoint at this address.")
    return JsonResponse(body, status=404)
