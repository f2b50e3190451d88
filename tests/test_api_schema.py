"""The OpenAPI schema and Swagger UI: generated without warnings, served without a CDN."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

API_PATHS = {
    "/api/v1/patients/": {"get", "post"},
    "/api/v1/patients/{id}/": {"get"},
    "/api/v1/cases/": {"get", "post"},
    "/api/v1/cases/{id}/": {"get"},
    "/api/v1/cases/{id}/images/": {"post"},
    "/api/v1/cases/from-dicom/": {"post"},
    "/api/v1/images/{id}/": {"get"},
    "/api/v1/images/{id}/file/": {"get"},
    "/api/v1/images/{id}/withdraw/": {"post"},
    "/api/v1/jobs/{id}/": {"get"},
    "/api/v1/jobs/{id}/retry/": {"post"},
    "/api/v1/predictions/{id}/": {"get"},
    "/api/v1/predictions/{id}/heatmap/": {"get"},
    "/api/v1/models/": {"get"},
    "/api/v1/cases/{id}/report/": {"get", "post"},
    "/api/v1/cases/{id}/report/addenda/": {"post"},
    "/api/v1/cases/{id}/report.pdf": {"get"},
    "/api/v1/model-statuses/": {"get"},  # modelops
    "/api/v1/webhooks/subscriptions/": {"get"},  # webhooks
    "/api/v1/webhooks/deliveries/": {"get"},  # webhooks
    "/api/v1/dicom/deliveries/": {"get"},  # dicomnet
    "/api/v1/dicom/deliveries/{id}/resend/": {"post"},  # dicomnet
}


def test_schema_lists_every_endpoint():
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    paths = {path: set(ops) - {"parameters"} for path, ops in schema["paths"].items()}
    assert paths == API_PATHS
    upload = schema["paths"]["/api/v1/cases/{id}/images/"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert "202" in upload["responses"]
    assert set(schema["components"]["securitySchemes"]) == {"tokenAuth", "cookieAuth"}


def test_schema_generates_without_warnings(tmp_path):
    # --fail-on-warn turns any drf-spectacular warning or error into a failure.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert "/api/v1/cases/{id}/images/" in (tmp_path / "schema.yaml").read_text()


def test_swagger_ui_is_served_locally():
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn.jsdelivr.net" not in page
