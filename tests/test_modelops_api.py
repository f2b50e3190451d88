"""GET /api/v1/model-statuses/: each model version's status in the caller's department, read-only,
for radiologists and tokens; another department's statuses never show; bad filters are 400s."""

# ruff: noqa: F811 - the fixtures imported from test_modelops_validation are requested by name
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from diagnosis.model_status import deployment_set_status
from diagnosis.models import ModelDeployment
from tests.conftest import token_client
from tests.factories import DepartmentFactory, UserFactory
from tests.test_modelops_validation import NEW, OLD, dept, model_folders  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db
URL = "/api/v1/model-statuses/"


@pytest.fixture
def reader_api(dept) -> APIClient:
    return token_client(UserFactory(username="api_rad", department=dept))


def rows(response) -> dict[tuple[str, str], dict]:
    return {(row["model_name"], row["model_version"]): row for row in response.json()["results"]}


def test_lists_the_departments_statuses(reader_api, dept):
    response = reader_api.get(URL)
    assert response.status_code == 200
    got = rows(response)
    assert set(got) == {OLD, NEW}
    old, new = got[OLD], got[NEW]
    assert (old["status"], old["modality"], new["status"]) == ("assistive", "xray", "silent")
    assert old["validation_page"] == "http://testserver/models/cxr-old/1.0.0/validation/"
    assert [(h["from_status"], h["to_status"]) for h in old["history"]] == [("silent", "assistive"), ("", "silent")]
    assert old["history"][0]["reason"] == "validated before (test)"


def test_filters(reader_api, dept):
    assert set(rows(reader_api.get(URL, {"status": "silent"}))) == {NEW}
    assert set(rows(reader_api.get(URL, {"modality": "ct"}))) == set()
    response = reader_api.get(URL, {"status": "shouting"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_choice"
    assert response.json()["error"]["fields"] == {"status": ['"shouting" is not a valid choice.']}
    assert reader_api.get(URL, {"colour": "red"}).json()["error"]["code"] == "unknown_parameter"


def test_another_department_sees_only_its_own(dept, model_folders):  # noqa: F811
    other = DepartmentFactory(name="Other dept", models=False)
    deployment_set_status(
        deployment=ModelDeployment.objects.get(department=other, model_name=NEW[0]),
        status="assistive",
        changed_by=None,
        reason="theirs",
    )
    got = rows(token_client(UserFactory(username="other_rad", department=other)).get(URL))
    assert (got[NEW]["status"], got[OLD]["status"]) == ("assistive", "silent")


def test_read_only(reader_api):
    response = reader_api.post(URL, {"model_name": "cxr-new"}, format="json")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_needs_authentication():
    response = APIClient().get(URL)
    assert response.status_code in (401, 403)
    assert "error" in response.json()
