"""Reads and writes of patient data that were not audited before issue 10: lists and searches
(pages and API, with what was searched), patients and cases created (API, pages, in the creating
transaction), jobs and predictions read over the API, the disagreements page."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from audit.models import AuditEvent
from diagnosis.models import InferenceJob, Patient
from reviews import services as review_services
from tests.factories import CaseFactory, InferenceJobFactory, PatientFactory, PredictionFactory, png_bytes

pytestmark = pytest.mark.django_db
A = AuditEvent.Action
CLIENT = {"REMOTE_ADDR": "198.51.100.21", "HTTP_USER_AGENT": "Mozilla/5.0 (XNET PHI test)"}


@pytest.fixture
def patient(radiologist):
    return PatientFactory(department=radiologist.department, created_by=radiologist, mrn="A-1001", name="Ada Lovelace")


@pytest.fixture
def case(patient, radiologist):
    return CaseFactory(patient=patient, created_by=radiologist)


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


# Lists and searches ------------------------------------------------------------------------


def test_worklist_search_is_recorded_with_what_was_searched(rad_client, radiologist, case):
    response = rad_client.get(reverse("worklist"), {"mrn": "A-1001", "status": "", "page": "1"}, **CLIENT)
    assert response.status_code == 200
    [event] = events(A.CASE_LIST)
    assert (event.actor, event.department_id, event.object_type, event.object_id) == (
        radiologist,
        radiologist.department_id,
        "case",
        "",
    )
    assert event.detail == {"status": 200, "query": {"mrn": "A-1001", "page": "1"}, "list": "worklist"}
    assert event.path == reverse("worklist")  # the search terms are in the detail, not the path
    assert (event.ip_address, event.user_agent) == (CLIENT["REMOTE_ADDR"], CLIENT["HTTP_USER_AGENT"])


def test_patient_search_page_is_recorded(rad_client, patient):
    assert rad_client.get(reverse("patient_list"), {"q": "Lovelace"}).status_code == 200
    [event] = events(A.PATIENT_LIST)
    assert event.detail["query"] == {"q": "Lovelace"}
    assert event.detail["list"] == "patient_list"


def test_disagreements_page_is_recorded(rad_client, radiologist, case):
    PredictionFactory(job__image__case=case)
    review_services.report_sign(
        case=case, signed_by=radiologist, agrees_with_ai=False, final_label="normal", impression="Clear."
    )
    assert rad_client.get(reverse("disagreements")).status_code == 200
    [event] = events(A.CASE_LIST)
    assert event.detail["list"] == "disagreements"


def test_api_lists_record_the_query_and_the_ids_answered(api, radiologist, patient, case):
    other = PatientFactory(department=radiologist.department, created_by=radiologist, mrn="A-2002")
    response = api.get("/api/v1/patients/", {"mrn": "A-1001"}, **CLIENT)
    assert response.status_code == 200
    [event] = events(A.PATIENT_LIST)
    assert event.actor == radiologist
    assert event.detail["query"] == {"mrn": "A-1001"}
    assert (event.detail["count"], event.detail["ids"]) == (1, [patient.pk])
    assert other.pk not in event.detail["ids"]
    assert event.detail["via"] == "api"

    assert api.get("/api/v1/cases/").status_code == 200
    [listed] = events(A.CASE_LIST)
    assert listed.detail["ids"] == [case.pk]


def test_a_refused_list_query_records_nothing(api, patient):
    assert api.get("/api/v1/cases/", {"status": "no-such-status"}).status_code == 400
    assert events(A.CASE_LIST) == []


def test_lists_of_another_department_record_only_what_was_answered(outsider_api, patient):
    assert outsider_api.get("/api/v1/patients/").status_code == 200
    [event] = events(A.PATIENT_LIST)
    assert event.detail["ids"] == []  # department B's reader saw none of department A's patients


# Patients and cases created ----------------------------------------------------------------


def test_api_patient_and_case_creation_are_recorded(api, radiologist):
    response = api.post("/api/v1/patients/", {"mrn": "N-1", "name": "Mary Anning"}, format="json", **CLIENT)
    assert response.status_code == 201, response.content
    patient_id = response.json()["id"]
    [created] = events(A.PATIENT_CREATE)
    assert (created.actor, created.department_id, created.object_type, created.object_id) == (
        radiologist,
        radiologist.department_id,
        "patient",
        str(patient_id),
    )
    assert (created.method, created.path, created.ip_address) == ("POST", "/api/v1/patients/", CLIENT["REMOTE_ADDR"])

    response = api.post("/api/v1/cases/", {"patient": patient_id, "modality": "xray"}, format="json")
    assert response.status_code == 201, response.content
    [case_event] = events(A.CASE_CREATE)
    assert (case_event.actor, case_event.object_id) == (radiologist, str(response.json()["id"]))
    assert case_event.detail == {"patient": patient_id}


def test_refused_api_creation_records_nothing(api, patient):
    before = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()  # the fixture's patient
    assert api.post("/api/v1/patients/", {"mrn": "A-1001", "name": "Twin"}, format="json").status_code == 400
    assert api.post("/api/v1/cases/", {"patient": patient.pk, "modality": "mri"}, format="json").status_code == 400
    created = AuditEvent.objects.filter(id__gt=before, action__in=[A.PATIENT_CREATE, A.CASE_CREATE])
    assert not created.exists()


def test_page_registration_records_patient_case_and_upload(rad_client, radiologist):
    form = {
        "patient_mode": "new",
        "mrn": "N-7",
        "name": "Caroline Herschel",
        "modality": "xray",
        "images": [SimpleUploadedFile("chest.png", png_bytes(), content_type="image/png")],
    }
    assert rad_client.post(reverse("case_create"), form, **CLIENT).status_code == 302
    patient = Patient.objects.get(mrn="N-7")
    case = patient.cases.get()
    assert [(e.action, e.object_id) for e in AuditEvent.objects.exclude(action=A.LOGIN).order_by("id")] == [
        (A.PATIENT_CREATE, str(patient.pk)),
        (A.CASE_CREATE, str(case.pk)),
        (A.UPLOAD, str(case.pk)),
    ]
    assert all(e.actor == radiologist for e in AuditEvent.objects.all())


def test_a_registration_rolled_back_by_a_bad_image_leaves_no_creation_event(rad_client):
    form = {
        "patient_mode": "new",
        "mrn": "N-8",
        "name": "Emmy Noether",
        "modality": "xray",
        "images": [SimpleUploadedFile("x.png", b"not an image", content_type="image/png")],
    }
    assert rad_client.post(reverse("case_create"), form).status_code == 400
    assert not Patient.objects.filter(mrn="N-8").exists()
    assert events(A.PATIENT_CREATE) == []
    assert events(A.CASE_CREATE) == []


# Jobs and predictions over the API ---------------------------------------------------------


def test_api_job_read_is_recorded_once_it_has_a_result(api, radiologist, case):
    pending = InferenceJobFactory(image__case=case, status=InferenceJob.Status.PENDING)
    for _ in range(3):  # a client polling a pending job
        assert api.get(f"/api/v1/jobs/{pending.pk}/").status_code == 200
    assert events(A.RESULT_VIEW) == []

    prediction = PredictionFactory(job__image__case=case)
    assert api.get(f"/api/v1/jobs/{prediction.job_id}/", **CLIENT).status_code == 200
    [event] = events(A.RESULT_VIEW)
    assert (event.actor, event.object_type, event.object_id) == (radiologist, "job", str(prediction.job_id))
    assert event.department_id == radiologist.department_id

    assert api.get(f"/api/v1/predictions/{prediction.pk}/").status_code == 200
    assert [(e.object_type, e.object_id) for e in events(A.RESULT_VIEW)][-1] == ("prediction", str(prediction.pk))


def test_another_departments_job_is_404_and_recorded_nowhere(outsider_api, case):
    prediction = PredictionFactory(job__image__case=case)
    assert outsider_api.get(f"/api/v1/jobs/{prediction.job_id}/").status_code == 404
    assert outsider_api.get(f"/api/v1/predictions/{prediction.pk}/").status_code == 404
    assert events(A.RESULT_VIEW) == []
