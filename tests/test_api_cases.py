"""/api/v1/cases/: create cases, filter the worklist, read a case with its results."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from diagnosis.models import Case, InferenceJob
from tests.factories import (
    CaseFactory,
    ImageFactory,
    InferenceJobFactory,
    PatientFactory,
    PredictionFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def patient(radiologist):
    return PatientFactory(department=radiologist.department, created_by=radiologist, mrn="A-1")


def _case(patient, **kwargs):
    return CaseFactory(patient=patient, created_by=patient.created_by, **kwargs)


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [case["id"] for case in response.json()["results"]]


def test_create_case(api, patient, radiologist):
    response = api.post(
        "/api/v1/cases/", {"patient": patient.pk, "modality": "ct", "indication": " Dyspnoea "}, format="json"
    )
    assert response.status_code == 201, response.content
    case = Case.objects.get()
    assert (case.patient, case.modality, case.indication, case.created_by) == (patient, "ct", "Dyspnoea", radiologist)
    body = response.json()
    assert body["id"] == case.pk
    assert response["Location"] == body["url"] == f"http://testserver/api/v1/cases/{case.pk}/"
    # A plain str: wsgiref (runserver) rejects str subclasses such as DRF's Hyperlink with a 500.
    assert type(response["Location"]) is str
    assert (body["patient"], body["patient_mrn"], body["modality"]) == (patient.pk, "A-1", "ct")
    assert (body["status"], body["images"]) == (None, [])


def test_unknown_modality_writes_nothing(api, patient):
    response = api.post("/api/v1/cases/", {"patient": patient.pk, "modality": "mri"}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_choice"
    assert error["fields"] == {"modality": ['"mri" is not a valid choice.']}
    assert not Case.objects.exists()


def test_other_departments_patient_is_unknown(api, other_department):
    foreign = PatientFactory(department=other_department)
    response = api.post("/api/v1/cases/", {"patient": foreign.pk, "modality": "xray"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"patient": ["Unknown patient."]}
    assert not Case.objects.exists()


@pytest.mark.parametrize(
    ("patient", "message"),
    [
        (None, "This field may not be null."),
        (987654, "Unknown patient."),
        ("abc", "A valid integer is required."),
        (1.5, "A valid integer is required."),  # was truncated to patient 1
        (True, "A valid integer is required."),
        (0, "Ensure this value is greater than or equal to 1."),
    ],
    ids=["null", "missing-id", "not-an-id", "fraction", "boolean", "zero"],
)
def test_bad_patient_reference(api, patient, message):
    response = api.post("/api/v1/cases/", {"patient": patient, "modality": "xray"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["patient"][0].startswith(message)
    assert not Case.objects.exists()


def test_list_newest_first_with_latest_job_summary(api, patient):
    older = _case(patient, created_at=timezone.now() - timedelta(days=1))
    newer = _case(patient)
    image = ImageFactory(case=older)
    InferenceJobFactory(image=image, status=InferenceJob.Status.FAILED)
    PredictionFactory(job__image=image)  # the newer job, succeeded
    body = api.get("/api/v1/cases/").json()
    assert [c["id"] for c in body["results"]] == [newer.pk, older.pk]
    newest, oldest = body["results"]
    assert (newest["status"], newest["top_label"]) == (None, None)
    assert (oldest["status"], oldest["top_label"], oldest["top_probability"]) == ("succeeded", "pneumonia", 0.7)


def test_list_query_count_does_not_grow(api, patient, django_assert_max_num_queries):
    for _ in range(5):
        PredictionFactory(job__image__case=_case(patient))
    api.get("/api/v1/cases/")  # the token's first use in an interval also writes an audit event
    # auth token, count, the page's positions (keys only), its full rows, and the audit event of
    # the list read (savepoint, insert, release)
    with django_assert_max_num_queries(7):
        assert len(_ids(api.get("/api/v1/cases/"))) == 5


def test_filters(api, patient, radiologist):
    other_patient = PatientFactory(department=radiologist.department, created_by=radiologist, mrn="A-2")
    now = timezone.now()
    xray_done = _case(patient, created_at=now - timedelta(days=10))
    PredictionFactory(job__image__case=xray_done)
    ct_pending = _case(patient, modality="ct", created_at=now - timedelta(days=2))
    InferenceJobFactory(image__case=ct_pending)
    empty = _case(other_patient, created_at=now)

    assert _ids(api.get("/api/v1/cases/", {"status": "succeeded"})) == [xray_done.pk]
    assert _ids(api.get("/api/v1/cases/", {"status": "pending"})) == [ct_pending.pk]
    assert _ids(api.get("/api/v1/cases/", {"status": "none"})) == [empty.pk]
    assert _ids(api.get("/api/v1/cases/", {"modality": "ct"})) == [ct_pending.pk]
    assert _ids(api.get("/api/v1/cases/", {"patient": other_patient.pk})) == [empty.pk]
    assert _ids(api.get("/api/v1/cases/", {"mrn": "A-1"})) == [ct_pending.pk, xray_done.pk]
    assert _ids(api.get("/api/v1/cases/", {"mrn": "A-1", "modality": "xray"})) == [xray_done.pk]
    day = (now - timedelta(days=2)).date().isoformat()
    assert _ids(api.get("/api/v1/cases/", {"created_after": day})) == [empty.pk, ct_pending.pk]
    assert _ids(api.get("/api/v1/cases/", {"created_before": day})) == [ct_pending.pk, xray_done.pk]
    instant = (now - timedelta(hours=1)).isoformat()
    assert _ids(api.get("/api/v1/cases/", {"created_after": instant})) == [empty.pk]
    assert _ids(api.get("/api/v1/cases/", {"created_before": instant})) == [ct_pending.pk, xray_done.pk]


def test_naive_datetime_filter_is_read_in_site_time_zone(api, patient):
    case = _case(patient, created_at=datetime(2025, 3, 1, 12, 0, tzinfo=timezone.get_current_timezone()))
    assert _ids(api.get("/api/v1/cases/", {"created_after": "2025-03-01T11:59:00"})) == [case.pk]
    assert _ids(api.get("/api/v1/cases/", {"created_after": "2025-03-01T12:01:00"})) == []


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("status", "done"),
        ("modality", "mri"),
        ("patient", "abc"),
        ("created_after", "yesterday"),
        ("created_before", "2025-02-30"),
    ],
)
def test_malformed_filter_is_400(api, param, value):
    response = api.get("/api/v1/cases/", {param: value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert list(error["fields"]) == [param]
    assert error["message"].startswith(f"{param}: ")


def test_detail_nests_images_jobs_and_predictions(api, patient, django_assert_max_num_queries):
    case = _case(patient)
    first = ImageFactory(case=case)
    failed = InferenceJobFactory(image=first, status=InferenceJob.Status.FAILED, error_message="no model")
    prediction = PredictionFactory(job__image=first)
    second = ImageFactory(case=case)
    pending = InferenceJobFactory(image=second)

    api.get("/api/v1/cases/")  # the token's first use in an interval writes an audit event: not measured here
    # token, case, images, jobs + predictions; then the case-view audit event (savepoint, insert, release);
    # then the shown model's status evidence (deployment, signed results, history row), once per model
    # version (cached for a minute, issue 12)
    with django_assert_max_num_queries(5 + 3 + 3):
        response = api.get(f"/api/v1/cases/{case.pk}/")
    assert response.status_code == 200
    body = response.json()
    assert [image["id"] for image in body["images"]] == [first.pk, second.pk]
    first_jobs = body["images"][0]["jobs"]
    assert [job["id"] for job in first_jobs] == [failed.pk, prediction.job.pk]
    assert first_jobs[0]["prediction"] is None
    assert first_jobs[0]["error_message"] == "no model"
    assert first_jobs[1]["prediction"]["top_label"] == "pneumonia"
    assert first_jobs[1]["prediction"]["probabilities"]["pneumonia"] == 0.7
    assert [job["id"] for job in body["images"][1]["jobs"]] == [pending.pk]
    # The summary is the latest job across the case's images.
    assert (body["status"], body["top_label"]) == ("pending", None)


def test_unknown_case_is_404(api):
    response = api.get("/api/v1/cases/424242/")
    assert response.status_code == 404
    assert response.json() == {"error": {"status": 404, "code": "not_found", "message": "Not found.", "fields": {}}}


def test_list_pages_by_cursor_return_every_case_once_newest_first(api, patient):
    same_time = timezone.now() - timedelta(hours=1)
    cases = [
        _case(patient, created_at=same_time if n % 3 else timezone.now() - timedelta(minutes=n)) for n in range(53)
    ]
    expected = [c.pk for c in sorted(cases, key=lambda c: (c.created_at, c.pk), reverse=True)]
    first = api.get("/api/v1/cases/").json()
    assert first["count"] == 53
    assert first["previous"] is None
    assert "cursor=" in first["next"]
    assert "page=" not in first["next"]
    second = api.get(first["next"]).json()
    assert second["next"] is None
    assert second["count"] == 53
    assert [c["id"] for c in first["results"] + second["results"]] == expected  # in order, once each
    back = api.get(second["previous"]).json()
    assert [c["id"] for c in back["results"]] == expected[:50]
    # page numbers still answer, with page-number links
    by_number = api.get("/api/v1/cases/?page=2").json()
    assert [c["id"] for c in by_number["results"]] == expected[50:]
    assert by_number["previous"].endswith("/api/v1/cases/")  # page 1, as DRF writes it


def test_cursor_keeps_the_filters(api, patient):
    for n in range(120):
        _case(patient, modality="ct" if n % 2 else "xray")
    first = api.get("/api/v1/cases/?modality=ct").json()
    assert "modality=ct" in first["next"]
    second = api.get(first["next"]).json()
    assert first["count"] == 60
    assert len(first["results"]) + len(second["results"]) == 60
    assert {c["modality"] for c in first["results"] + second["results"]} == {"ct"}


@pytest.mark.parametrize(
    "query", ["cursor=abc", "cursor=", "cursor=e30", "page=1&cursor=eyJuIjoxfQ", "cursor=a&cursor=b"]
)
def test_cursor_that_names_no_page_is_404(api, query):
    response = api.get(f"/api/v1/cases/?{query}")
    assert response.status_code == 404  # as a page past the last
    assert "cursor" in response.json()["error"]["message"]


def test_list_columns_of_a_reading_room(api, patient):
    case = _case(patient)
    ImageFactory(case=case)
    withdrawn = ImageFactory(case=case)
    withdrawn.withdrawn_at = timezone.now()
    withdrawn.save()
    [row] = api.get("/api/v1/cases/").json()["results"]
    assert row["image_count"] == 1
    assert row["patient_sex"] == patient.sex
    assert row["patient_birth_date"] == (patient.birth_date.isoformat() if patient.birth_date else None)
    assert row["waiting_since"] is not None
    detail = api.get(f"/api/v1/cases/{case.pk}/").json()
    assert detail["image_count"] == 1
