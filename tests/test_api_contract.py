"""The API's contract under bad input and failures: always the one JSON error shape, never a 500
or HTML, and what the schema promises (issue 10, "Server errors and contract")."""

from __future__ import annotations

import contextlib
import json
import socket
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import OperationalError, connection
from django.test import RequestFactory
from django.urls import get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from diagnosis.api import errors
from diagnosis.api.serializers import INDICATION_MAX_LENGTH
from diagnosis.models import Case, InferenceJob, Patient
from tests.conftest import token_client
from tests.factories import CaseFactory, InferenceJobFactory, PatientFactory, PredictionFactory

pytestmark = pytest.mark.django_db

METHODS = ["get", "post", "put", "patch", "delete", "options"]


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"status", "code", "message", "fields"}
    assert body["error"]["status"] == status
    assert body["error"]["message"]
    return body["error"]


@pytest.fixture
def patient(radiologist):
    return PatientFactory(department=radiologist.department, created_by=radiologist)


@pytest.fixture
def browser(radiologist) -> APIClient:
    """A logged-in browser session that gets CSRF checks, as a real one does."""
    client = APIClient(enforce_csrf_checks=True, raise_request_exception=False)
    client.force_login(radiologist)
    return client


# Request bodies -------------------------------------------------------------------------------


def test_json_nested_too_deep_is_a_400_not_a_500(api):
    api.raise_request_exception = False
    depth = 100_000
    response = api.post("/api/v1/patients/", data="[" * depth + "]" * depth, content_type="application/json")
    error = _error(response, 400)
    assert error["code"] == "parse_error"
    assert "nested too deeply" in error["message"]
    assert not Patient.objects.exists()


def test_json_body_over_the_memory_limit_is_a_413_with_the_limit(api, settings):
    api.raise_request_exception = False
    body = json.dumps({"mrn": "X-1", "name": "a" * (6 * 1024 * 1024)})
    assert len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    error = _error(api.post("/api/v1/patients/", data=body, content_type="application/json"), 413)
    assert error["code"] == "too_large"
    assert "5.0 MB" in error["message"]
    assert not Patient.objects.exists()


def test_upload_form_fields_over_the_memory_limit_are_a_413(api, settings):
    """An upload address takes a large body for its files, but Django still limits the other
    fields of the form to DATA_UPLOAD_MAX_MEMORY_SIZE: that was a bare HTML 400."""
    api.raise_request_exception = False
    indication = "a" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    body = {"file": SimpleUploadedFile("a.dcm", b"DICM"), "indication": indication}
    error = _error(api.post("/api/v1/cases/from-dicom/", body, format="multipart"), 413)
    assert error["code"] == "too_large"
    assert "5.0 MB" in error["message"]
    assert not Case.objects.exists()


def test_too_many_form_fields_is_a_json_400(api, settings):
    api.raise_request_exception = False
    body = {f"f{n}": "1" for n in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)}
    body["file"] = SimpleUploadedFile("a.dcm", b"DICM")
    response = api.post("/api/v1/cases/from-dicom/", body, format="multipart")
    assert _error(response, 400)["code"] == "too_many_fields"
    assert not Case.objects.exists()


def test_bodies_other_than_json_are_refused_outside_uploads(api):
    """A form encoding cannot say null: `birth_date=` became null where the schema says date."""
    response = api.post("/api/v1/patients/", {"mrn": "X-1", "name": "Ann", "birth_date": ""}, format="multipart")
    assert _error(response, 415)["code"] == "unsupported_media_type"
    assert not Patient.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", 0, "Not a valid string."),
        ("birth_date", 20000101, "Not a valid string."),
        ("sex", 1, "Not a valid string."),
    ],
)
def test_json_values_of_another_type_are_refused_not_converted(api, field, value, message):
    """DRF stored the number 0 as the name "0"; the schema says string."""
    body = {"mrn": "X-1", "name": "Ann Example", field: value}
    assert _error(api.post("/api/v1/patients/", body, format="json"), 400)["fields"] == {field: [message]}
    assert not Patient.objects.exists()


def test_request_bodies_take_no_other_properties_in_the_schema():
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    for name in ("PatientCreate", "CaseCreate", "DicomCaseCreate", "ImageUpload", "ReportSign", "AddendumCreate"):
        assert schema["components"]["schemas"][name]["additionalProperties"] is False, name


def test_texts_the_server_needs_are_not_blank_in_the_schema():
    """The sign-off and addendum texts allowed "" in the schema, and the server refused it."""
    components = APIClient().get("/api/schema/", {"format": "json"}).json()["components"]["schemas"]
    assert components["ReportSign"]["properties"]["impression"]["pattern"] == "\\S"
    assert components["AddendumCreate"]["properties"]["text"]["pattern"] == "\\S"


# Unknown addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("path", ["/api/v1/nothing-here/", "/api/nothing-here/", "/api/v2/cases/"])
def test_unknown_api_address_is_a_json_404_for_every_method(browser, api, method, path):
    """POST with a session cookie used to be Django's HTML CSRF page (403), and addresses under
    /api/ outside /api/v1/ the site's HTML 404."""
    body = {} if method in ("get", "options") else {"data": "{}", "content_type": "application/json"}
    for client in (browser, api):
        response = getattr(client, method)(path, **body)
        assert _error(response, 404)["code"] == "not_found"


def test_pages_keep_their_html_404(rad_client):
    response = rad_client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


# Server errors --------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _database_refusing_connections():
    """Points the connection at a port where nothing listens: every query of the request that
    follows fails in psycopg's connect, as when PostgreSQL is down."""
    original = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(_closed_port()))
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(original)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/api/v1/cases/", "/api/v1/patients/"])
def test_database_outage_is_a_json_503_with_retry_after(radiologist, path):
    token = token_client(radiologist)
    token.raise_request_exception = False
    session = APIClient(raise_request_exception=False)
    session.force_login(radiologist)
    for client in (token, session):
        with _database_refusing_connections():
            response = client.get(path)
        error = _error(response, 503)
        assert error["code"] == "database_unavailable"
        assert response["Retry-After"] == str(errors.RETRY_AFTER_SECONDS)
    assert token.get(path).status_code == 200  # and back once the database is


@pytest.mark.django_db(transaction=True)
def test_database_outage_on_a_write_is_a_503_and_writes_nothing(radiologist):
    api = token_client(radiologist)
    api.raise_request_exception = False
    with _database_refusing_connections():
        response = api.post("/api/v1/patients/", {"mrn": "X-1", "name": "Ann Example"}, format="json")
    assert _error(response, 503)["code"] == "database_unavailable"
    assert not Patient.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_database_outage_outside_a_view_is_a_json_503_too():
    """Middleware that queries (sessions, audit) fails before any view: Django logs the
    exception and calls handler500, which tells the outage apart from a bug."""
    request = RequestFactory().get("/api/v1/cases/")
    with _database_refusing_connections():
        try:
            Patient.objects.count()
        except OperationalError:
            response = errors.server_error(request)
    assert response.status_code == 503
    assert response["Retry-After"] == str(errors.RETRY_AFTER_SECONDS)
    assert json.loads(response.content)["error"]["code"] == "database_unavailable"


def test_disallowed_host_under_api_is_a_json_400(api):
    api.raise_request_exception = False
    assert _error(api.get("/api/v1/cases/", HTTP_HOST="evil.example"), 400)["code"] == "bad_request"


def test_django_error_handlers_are_the_json_ones_under_api():
    resolver = get_resolver()
    assert resolver.resolve_error_handler(400) is errors.bad_request
    assert resolver.resolve_error_handler(403) is errors.permission_denied
    assert resolver.resolve_error_handler(404) is errors.page_not_found
    assert resolver.resolve_error_handler(500) is errors.server_error


def test_unhandled_exception_under_api_is_a_json_500_without_the_traceback():
    request = RequestFactory().get("/api/v1/cases/")
    try:
        raise RuntimeError("secret detail /srv/xnet/var")
    except RuntimeError:
        response = errors.server_error(request)  # what Django calls after logging the exception
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content)["error"]
    assert body["code"] == "server_error"
    assert "secret" not in response.content.decode()


def test_unhandled_exception_on_a_page_keeps_the_html_500():
    request = RequestFactory().get("/cases/1/")
    try:
        raise RuntimeError("bug")
    except RuntimeError:
        response = errors.server_error(request)
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")


# Pages of lists -------------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["0", "-1", "abc", "", "1.5"])
def test_malformed_page_is_a_400_naming_page(api, page):
    error = _error(api.get("/api/v1/cases/", {"page": page}), 400)
    assert set(error["fields"]) == {"page"}


def test_page_past_the_last_is_a_404_naming_the_last(api, patient, settings):
    CaseFactory(patient=patient)
    assert api.get("/api/v1/cases/", {"page": 1}).status_code == 200
    error = _error(api.get("/api/v1/patients/", {"page": 3}), 404)
    assert error["message"] == "There is no page 3; the last page is 1."


# Query parameters -----------------------------------------------------------------------------


def test_unknown_filter_is_refused_not_ignored(api, patient, other_department):
    """`?patient_id=` (for `patient`) used to be ignored and return every case."""
    CaseFactory(patient=patient)
    error = _error(api.get("/api/v1/cases/", {"patient_id": patient.pk + 1}), 400)
    assert error["code"] == "unknown_parameter"
    assert set(error["fields"]) == {"patient_id"}
    assert "patient" in error["fields"]["patient_id"][0]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/patients/", 200),
        ("/api/v1/models/", 200),
        ("/api/v1/cases/{case}/", 200),
        ("/api/v1/patients/{patient}/", 200),
        ("/api/v1/cases/{case}/report/", 404),  # not signed yet
        ("/api/v1/cases/{case}/report.pdf", 409),
    ],
)
def test_every_endpoint_refuses_unknown_query_parameters(api, patient, path, status):
    case = CaseFactory(patient=patient)
    url = path.format(case=case.pk, patient=patient.pk)
    assert api.get(url).status_code == status
    error = _error(api.get(url, {"modality_name": "ct"}), 400)
    assert error["code"] == "unknown_parameter"


def test_unknown_query_parameter_on_a_write_is_refused_and_writes_nothing(api):
    response = api.post("/api/v1/patients/?dry_run=1", {"mrn": "X-1", "name": "Ann Example"}, format="json")
    assert _error(response, 400)["code"] == "unknown_parameter"
    assert not Patient.objects.exists()


def test_authentication_comes_before_query_checks():
    assert _error(APIClient().get("/api/v1/cases/", {"patient_id": 1}), 401)["code"] == "not_authenticated"


@pytest.mark.parametrize("param", ["mrn", "status", "patient", "created_after"])
def test_blank_filter_is_refused_not_ignored(api, param):
    error = _error(api.get("/api/v1/cases/", {param: ""}), 400)
    assert error["fields"] == {param: ["This parameter may not be blank."]}


def test_repeated_filter_is_refused(api):
    error = _error(api.get("/api/v1/cases/?status=pending&status=failed"), 400)
    assert error["fields"] == {"status": ["Give this parameter once."]}


def test_date_filters_take_rfc3339_in_either_case(api, patient):
    case = CaseFactory(patient=patient)
    since = (case.created_at - timedelta(minutes=1)).strftime("%Y-%m-%dt%H:%M:%Sz")
    response = api.get("/api/v1/cases/", {"created_after": since})
    assert response.status_code == 200, response.content
    assert [row["id"] for row in response.json()["results"]] == [case.pk]


# Bodies the schema allows but the rules refuse ------------------------------------------------


def test_fractional_patient_id_is_refused_not_truncated(api, patient):
    response = api.post("/api/v1/cases/", {"patient": patient.pk + 0.5, "modality": "xray"}, format="json")
    assert _error(response, 400)["fields"] == {"patient": ["A valid integer is required."]}
    assert not Case.objects.exists()


def test_birth_date_in_the_future_is_refused(api):
    tomorrow = timezone.localdate() + timedelta(days=1)
    response = api.post(
        "/api/v1/patients/", {"mrn": "X-1", "name": "Ann Example", "birth_date": tomorrow.isoformat()}, format="json"
    )
    assert _error(response, 400)["fields"] == {"birth_date": ["A birth date cannot be in the future."]}
    assert not Patient.objects.exists()
    today = timezone.localdate().isoformat()
    body = {"mrn": "X-1", "name": "Ann", "birth_date": today}
    assert api.post("/api/v1/patients/", body, format="json").status_code == 201


@pytest.mark.parametrize("field", ["mrn", "name"])
def test_blank_names_are_refused_and_the_schema_says_so(api, field):
    body = {"mrn": "X-1", "name": "Ann Example", field: "   "}
    assert _error(api.post("/api/v1/patients/", body, format="json"), 400)["fields"] == {
        field: ["This field may not be blank."]
    }
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    assert schema["components"]["schemas"]["PatientCreate"]["properties"][field]["pattern"] == "\\S"


def test_indication_is_capped_as_on_the_page(api, patient):
    assert INDICATION_MAX_LENGTH == 2000
    body = {"patient": patient.pk, "modality": "xray", "indication": "x" * (INDICATION_MAX_LENGTH + 1)}
    error = _error(api.post("/api/v1/cases/", body, format="json"), 400)
    assert set(error["fields"]) == {"indication"}
    assert not Case.objects.exists()
    body["indication"] = "x" * INDICATION_MAX_LENGTH
    assert api.post("/api/v1/cases/", body, format="json").status_code == 201


def test_from_dicom_indication_is_capped_too(api):
    body = {"file": SimpleUploadedFile("a.dcm", b"not read"), "indication": "x" * (INDICATION_MAX_LENGTH + 1)}
    error = _error(api.post("/api/v1/cases/from-dicom/", body, format="multipart"), 400)
    assert "indication" in error["fields"]
    assert not Case.objects.exists()


# Output the schema promises -------------------------------------------------------------------


def test_job_without_a_rejection_has_a_null_code(api, patient):
    succeeded = PredictionFactory(job__image__case=CaseFactory(patient=patient)).job
    rejected = InferenceJobFactory(
        image__case=CaseFactory(patient=patient),
        status=InferenceJob.Status.REJECTED,
        rejection_code=InferenceJob.Rejection.LATERAL_VIEW,
    )
    assert api.get(f"/api/v1/jobs/{succeeded.pk}/").json()["rejection_code"] is None
    assert api.get(f"/api/v1/jobs/{rejected.pk}/").json()["rejection_code"] == "lateral_view"
