"""Friendly error pages and quiet logs with the embedded defaults (DEBUG on), issue 13.

Before: a missing page showed Django's technical 404 listing every URL pattern, and each
expected 403 printed a full traceback twice on the console.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.log import log_response

from tests.factories import CaseFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def debug_on(settings):
    settings.DEBUG = True


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """What the configured console handlers print for django.request records, caught in a buffer:
    every plain StreamHandler on the way from django.request to the root logger (Django's own
    console handler on "django" was one of them), redirected while the test runs."""
    buffer = io.StringIO()
    chain = [logging.getLogger("django.request"), logging.getLogger("django"), logging.getLogger()]
    handlers = [handler for logger in chain for handler in logger.handlers if type(handler) is logging.StreamHandler]
    assert handlers, "no console handler configured"
    old = [handler.setStream(buffer) for handler in handlers]
    yield buffer
    for handler, stream in zip(handlers, old, strict=True):
        handler.setStream(stream)


def test_a_missing_page_is_our_404_page_not_the_url_list(debug_on, rad_client):
    response = rad_client.get("/no-such-page/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "There is nothing here, or it belongs to another department." in page
    assert "Django tried these URL patterns" not in page
    assert "xnet_site.urls" not in page
    assert reverse("worklist") in page  # the way back


def test_another_departments_case_is_our_404_page(debug_on, rad_client, outsider):
    case = CaseFactory(patient__department=outsider.department, patient__created_by=outsider, created_by=outsider)
    response = rad_client.get(reverse("case_detail", args=[case.pk]))
    assert response.status_code == 404
    assert "There is nothing here, or it belongs to another department." in response.content.decode()
    assert "Technical details" not in response.content.decode()


def test_api_404_stays_json_with_debug_on(debug_on, api):
    response = api.get("/api/v1/no-such-endpoint/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    response = api.get("/api/v1/cases/999999/")
    assert response.status_code == 404
    assert response.json()["error"]["status"] == 404


def test_an_expected_403_logs_one_line_without_traceback(debug_on, console, rad_client):
    response = rad_client.get(reverse("audit_log"))
    assert response.status_code == 403
    assert "Only department admins can read the audit log." in response.content.decode()
    printed = console.getvalue()
    assert printed.count("Forbidden (Permission denied): /audit/") == 1
    assert "Traceback" not in printed


def test_a_missing_page_logs_one_line(debug_on, console, rad_client):
    rad_client.get("/no-such-page/")
    printed = console.getvalue()
    assert printed.count("Not Found: /no-such-page/") == 1
    assert "Traceback" not in printed


def test_a_500_keeps_its_traceback(debug_on, console, rf):
    """As Django's handler logs an unhandled exception (log_response with the exception)."""
    request: HttpRequest = rf.get("/broken/")
    try:
        raise RuntimeError("a real bug")
    except RuntimeError as error:
        log_response(
            "Internal Server Error: %s",
            request.path,
            response=HttpResponse(status=500),
            request=request,
            exception=error,
        )
    printed = console.getvalue()
    assert printed.count("Internal Server Error: /broken/") == 1
    assert "Traceback" in printed
    assert "RuntimeError: a real bug" in printed
