"""Every API error has one shape: {"error": {"status", "code", "message", "fields"}}."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework.exceptions import Throttled
from rest_framework.test import APIClient

from accounts.models import ApiToken
from diagnosis.api.errors import exception_handler
from diagnosis.models import Patient
from tests.conftest import token_client
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"status", "code", "message", "fields"}
    assert error["status"] == status
    assert error["message"]
    return error


@pytest.mark.parametrize("url", ["/api/v1/patients/", "/api/v1/cases/", "/api/v1/jobs/1/"])
def test_unauthenticated_is_401(url):
    response = APIClient().get(url)
    error = _error(response, 401)
    assert error["code"] == "not_authenticated"
    assert error["fields"] == {}
    assert response["WWW-Authenticate"] == "Token"


def test_wrong_token_is_401():
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert _error(api.get("/api/v1/cases/"), 401)["code"] == "authentication_failed"


def test_inactive_users_token_is_401(radiologist):
    api = token_client(radiologist)
    radiologist.is_active = False
    radiologist.save()
    assert _error(api.get("/api/v1/cases/"), 401)["code"] == "authentication_failed"


def test_user_without_department_is_403():
    admin = UserFactory(username="site_admin", department=None, is_superuser=True, is_staff=True)
    error = _error(token_client(admin).get("/api/v1/patients/"), 403)
    assert error == {
        "status": 403,
        "code": "permission_denied",
        "message": "Your account belongs to no department.",
        "fields": {},
    }


def test_browser_session_auth_works_and_checks_csrf(radiologist):
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(radiologist)
    assert browser.get("/api/v1/patients/").status_code == 200
    error = _error(browser.post("/api/v1/patients/", {"mrn": "X", "name": "Y"}, format="json"), 403)
    assert "CSRF" in error["message"]
    assert not Patient.objects.exists()
    assert not ApiToken.objects.filter(user=radiologist).exists()  # the browser needs no token


def test_method_not_allowed_is_405(api):
    response = api.delete("/api/v1/patients/")
    error = _error(response, 405)
    assert error["code"] == "method_not_allowed"
    assert error["message"] == 'Method "DELETE" not allowed.'
    assert "POST" in response["Allow"]


def test_malformed_json_is_400_parse_error(api):
    response = api.post("/api/v1/patients/", data='{"mrn": "X",', content_type="application/json")
    assert _error(response, 400)["code"] == "parse_error"
    assert not Patient.objects.exists()


def test_unsupported_media_type_is_415(api):
    response = api.post("/api/v1/patients/", data="<patient/>", content_type="application/xml")
    assert _error(response, 415)["code"] == "unsupported_media_type"


@pytest.mark.parametrize("url", ["/api/v1/nothing-here/", "/api/v1/cases/abc/", "/api/v1/cases/1"])
def test_unknown_api_address_is_json_404(api, url):
    assert _error(api.get(url), 404)["code"] == "not_found"


def test_validation_error_lists_every_field(api):
    error = _error(api.post("/api/v1/cases/", {}, format="json"), 400)
    assert error["code"] == "invalid"
    assert error["fields"] == {"patient": ["This field is required."], "modality": ["This field is required."]}
    assert error["message"] == "patient: This field is required.; modality: This field is required."


# The handler itself, for errors no endpoint raises on demand.


def test_django_validation_error_from_a_service_is_400():
    response = exception_handler(DjangoValidationError({"mrn": ["Taken."], "__all__": ["Not allowed."]}), {})
    assert response.status_code == 400
    assert response.data == {
        "error": {
            "status": 400,
            "code": "invalid",
            "message": "Not allowed.; mrn: Taken.",
            "fields": {"mrn": ["Taken."]},
        }
    }


def test_django_validation_error_keeps_a_single_code():
    response = exception_handler(DjangoValidationError("The file is empty (0 bytes).", code="empty"), {})
    assert response.data["error"] == {
        "status": 400,
        "code": "empty",
        "message": "The file is empty (0 bytes).",
        "fields": {},
    }


def test_throttled_is_429_with_retry_after():
    response = exception_handler(Throttled(wait=30), {})
    assert response.status_code == 429
    assert response["Retry-After"] == "30"
    assert response.data["error"]["code"] == "throttled"
    assert "30 seconds" in response.data["error"]["message"]


def test_unexpected_exceptions_are_left_to_django():
    assert exception_handler(RuntimeError("bug"), {}) is None
