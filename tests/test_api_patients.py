"""/api/v1/patients/: an external app registers and looks up patients by MRN."""

from __future__ import annotations

import pytest

from diagnosis.models import Patient
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def patient(radiologist):
    return PatientFactory(department=radiologist.department, created_by=radiologist, mrn="A-100", name="Ada Byron")


def test_list_is_paginated_and_sorted_by_name(api, radiologist):
    for name in ["Carla", "Anna", "Bert"]:
        PatientFactory(department=radiologist.department, created_by=radiologist, name=name)
    body = api.get("/api/v1/patients/").json()
    assert body["count"] == 3
    assert body["next"] is None
    assert [p["name"] for p in body["results"]] == ["Anna", "Bert", "Carla"]


def test_list_pages_hold_fifty(api, radiologist):
    PatientFactory.create_batch(51, department=radiologist.department, created_by=radiologist)
    first = api.get("/api/v1/patients/").json()
    assert first["count"] == 51
    assert len(first["results"]) == 50
    second = api.get(first["next"]).json()
    assert len(second["results"]) == 1
    beyond = api.get("/api/v1/patients/?page=3")
    assert beyond.status_code == 404
    assert beyond.json()["error"]["code"] == "not_found"


def test_filter_by_exact_mrn(api, patient, radiologist):
    PatientFactory(department=radiologist.department, created_by=radiologist, mrn="A-1000")
    results = api.get("/api/v1/patients/", {"mrn": "A-100"}).json()["results"]
    assert [p["id"] for p in results] == [patient.pk]
    assert api.get("/api/v1/patients/", {"mrn": "nobody"}).json()["results"] == []


def test_retrieve(api, patient):
    response = api.get(f"/api/v1/patients/{patient.pk}/")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == patient.pk
    assert body["url"] == f"http://testserver/api/v1/patients/{patient.pk}/"
    assert (body["mrn"], body["name"], body["sex"]) == ("A-100", "Ada Byron", "F")
    assert body["birth_date"] == patient.birth_date.isoformat()


def test_create(api, radiologist):
    response = api.post(
        "/api/v1/patients/",
        {"mrn": " B-7 ", "name": "Grace Hopper", "birth_date": "1906-12-09", "sex": "F"},
        format="json",
    )
    assert response.status_code == 201, response.content
    patient = Patient.objects.get()
    assert (patient.mrn, patient.name, patient.sex) == ("B-7", "Grace Hopper", "F")
    assert patient.birth_date.isoformat() == "1906-12-09"
    assert patient.department == radiologist.department
    assert patient.created_by == radiologist
    assert response.json()["id"] == patient.pk
    assert response["Location"] == f"http://testserver/api/v1/patients/{patient.pk}/"


def test_create_with_only_required_fields(api):
    response = api.post("/api/v1/patients/", {"mrn": "C-1", "name": "Alan Turing"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert (body["sex"], body["birth_date"]) == ("U", None)


def test_a_misspelt_field_is_400_not_silently_dropped(api):
    # An external app that sends date_of_birth would otherwise register the patient without one.
    payload = {"mrn": "C-2", "name": "Ada Lovelace", "date_of_birth": "1815-12-10"}
    response = api.post("/api/v1/patients/", payload, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unknown_field"
    assert error["fields"] == {"date_of_birth": ["Unknown field; this endpoint accepts mrn, name, birth_date, sex."]}
    assert not Patient.objects.exists()


def test_duplicate_mrn_in_department_is_400(api, patient):
    response = api.post("/api/v1/patients/", {"mrn": "A-100", "name": "Someone Else"}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["fields"] == {"mrn": ["A patient with this MRN is already registered in your department."]}
    assert Patient.objects.count() == 1


def test_same_mrn_in_another_department_is_allowed(outsider_api, patient):
    response = outsider_api.post("/api/v1/patients/", {"mrn": "A-100", "name": "Other Person"}, format="json")
    assert response.status_code == 201
    assert Patient.objects.filter(mrn="A-100").count() == 2


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"mrn": "D-1"}, "name", "This field is required."),
        ({"mrn": "", "name": "X"}, "mrn", "This field may not be blank."),
        ({"mrn": "D-1", "name": "X", "sex": "Z"}, "sex", '"Z" is not a valid choice.'),
        ({"mrn": "D-1", "name": "X", "birth_date": "09/12/1906"}, "birth_date", "Date has wrong format."),
        ({"mrn": "D" * 65, "name": "X"}, "mrn", "Ensure this field has no more than 64 characters."),
    ],
    ids=["missing-name", "blank-mrn", "bad-sex", "bad-date", "long-mrn"],
)
def test_invalid_patient_is_400(api, payload, field, message):
    response = api.post("/api/v1/patients/", payload, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert list(error["fields"]) == [field]
    assert error["fields"][field][0].startswith(message)
    assert error["message"].startswith(f"{field}: {message}")
    assert not Patient.objects.exists()
