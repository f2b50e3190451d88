"""STOW-RS (POST /dicomweb/studies), the deliveries API, and the department's DICOM page."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.uid import generate_uid

from diagnosis.models import Case, Image, InferenceJob, Patient
from dicomnet.models import Delivery, DicomNode, IntakeEvent, StudyLink
from tests.conftest import token_client
from tests.dicom_files import UID_ROOT, make_dicom, pydicom_file, rewrite
from tests.factories import CaseFactory, PatientFactory

pytestmark = pytest.mark.django_db

BOUNDARY = "xnet-test-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def instance(study_uid: str, *, patient_id: str = "STOW-1", name: str = "Poe^Edgar", **kw) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(make_dicom(modality="CR", patient_id=patient_id, patient_name=name, **kw)))
    ds.StudyInstanceUID = study_uid
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multipart(*parts: bytes, part_type: str = "application/dicom") -> bytes:
    body = b""
    for part in parts:
        body += f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def stow(api, *parts: bytes, path: str = "/dicomweb/studies", content_type: str = STOW_TYPE):
    return api.generic("POST", path, multipart(*parts), content_type=content_type)


def sop(data: bytes) -> str:
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID


def test_stow_stores_a_study_as_one_case(api, department, radiologist):
    study = generate_uid(UID_ROOT)
    first, second = instance(study), instance(study)
    response = stow(api, first, second)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/dicom+json"
    body = response.json()
    stored = [item["00081155"]["Value"][0] for item in body["00081199"]["Value"]]
    assert stored == [sop(first), sop(second)]
    assert "00081198" not in body
    case = StudyLink.objects.get(department=department, study_instance_uid=study).case
    assert case.images.count() == 2
    assert InferenceJob.objects.filter(image__case=case).count() >= 2
    patient = case.patient
    assert (patient.mrn, patient.name, patient.department_id) == ("STOW-1", "Edgar Poe", department.pk)

    # Sent again: nothing new, still a success.
    again = stow(api, first)
    assert again.status_code == 200
    assert (Case.objects.count(), Image.objects.count()) == (1, 2)
    assert IntakeEvent.objects.filter(outcome="duplicate").count() == 1


def test_stow_refuses_what_the_upload_refuses_with_reasons(api, department):
    study = generate_uid(UID_ROOT)
    chest, mr = instance(study), pydicom_file("MR_small.dcm")
    response = stow(api, chest, mr)
    assert response.status_code == 202
    body = response.json()
    assert [i["00081155"]["Value"][0] for i in body["00081199"]["Value"]] == [sop(chest)]
    [failed] = body["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [sop(mr)]
    assert failed["00081197"]["Value"] == [0xC000]
    assert "MR" in failed["00000902"]["Value"][0]
    event = IntakeEvent.objects.get(outcome="refused")
    assert event.code == "dicom_wrong_modality"
    assert "XNET classifies chest X-rays" in event.reason

    # Nothing stored at all: 409.
    knee = instance(generate_uid(UID_ROOT), body_part="KNEE")
    refused = stow(api, knee)
    assert refused.status_code == 409
    assert refused.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    assert Case.objects.count() == 1


def test_stow_refuses_a_patient_whose_identity_disagrees(api, department, radiologist):
    PatientFactory(department=department, created_by=radiologist, mrn="STOW-1", name="Someone Else")
    response = stow(api, instance(generate_uid(UID_ROOT)))
    assert response.status_code == 409
    assert IntakeEvent.objects.get().code == "patient_identity_mismatch"
    assert not Case.objects.exists()


def test_stow_to_a_named_study_refuses_other_studies(api):
    named = generate_uid(UID_ROOT)
    response = stow(api, instance(generate_uid(UID_ROOT)), path=f"/dicomweb/studies/{named}")
    assert response.status_code == 409
    assert IntakeEvent.objects.get().code == "study_mismatch"


@pytest.mark.parametrize(
    ("content_type", "status", "code"),
    [
        ("application/dicom", 415, "unsupported_media_type"),
        (f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}', 415, "unsupported_media_type"),
        ('multipart/related; type="application/dicom"', 400, "invalid"),
    ],
)
def test_stow_bad_requests_get_clear_errors(api, content_type, status, code):
    response = stow(api, instance(generate_uid(UID_ROOT)), content_type=content_type)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert not Case.objects.exists()


def test_stow_needs_a_token(client):
    response = client.generic("POST", "/dicomweb/studies", multipart(b"x"), content_type=STOW_TYPE)
    assert response.status_code in (401, 403)
    assert "error" in response.json()


def test_stow_files_into_the_callers_department(outsider_api, outsider, department):
    study = generate_uid(UID_ROOT)
    assert stow(outsider_api, instance(study)).status_code == 200
    link = StudyLink.objects.get(study_instance_uid=study)
    assert link.department_id == outsider.department_id != department.pk
    assert Patient.objects.get().department_id == outsider.department_id


@pytest.fixture
def delivery(department, radiologist):
    node = DicomNode.objects.create(department=department, name="PACS", ae_title="PACS1", host="127.0.0.1", port=104)
    case = CaseFactory(patient=PatientFactory(department=department, created_by=radiologist), created_by=radiologist)
    return Delivery.objects.create(
        node=node, case=case, kind="pdf", series_instance_uid=generate_uid(), sop_instance_uid=generate_uid(),
        status="failed", attempts=8, last_error="no DICOM association with PACS1",
    )  # fmt: skip


def test_deliveries_api_lists_a_cases_deliveries_and_admins_resend(api, department_admin, outsider_api, delivery):
    listed = api.get(f"/api/v1/dicom/deliveries/?case={delivery.case_id}")
    assert listed.status_code == 200
    [row] = listed.json()["results"]
    assert (row["status"], row["attempts"], row["ae_title"]) == ("failed", 8, "PACS1")
    assert outsider_api.get("/api/v1/dicom/deliveries/").json()["results"] == []

    assert api.post(f"/api/v1/dicom/deliveries/{delivery.pk}/resend/").status_code == 403
    assert outsider_api.post(f"/api/v1/dicom/deliveries/{delivery.pk}/resend/").status_code == 404
    resent = token_client(department_admin).post(f"/api/v1/dicom/deliveries/{delivery.pk}/resend/")
    assert resent.status_code == 202
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.resent_by) == ("pending", 0, department_admin)
    # On its way: a second resend is refused with a reason.
    again = token_client(department_admin).post(f"/api/v1/dicom/deliveries/{delivery.pk}/resend/")
    assert again.status_code == 400
    assert "on its way" in again.json()["error"]["message"] + str(again.json()["error"]["fields"])


def test_case_page_shows_deliveries(rad_client, delivery):
    page = rad_client.get(f"/cases/{delivery.case_id}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="dicom-deliveries"' in html
    assert "no DICOM association with PACS1" in html


def test_dicom_page_admin_adds_nodes_radiologist_reads(client, department_admin, radiologist, other_department):
    DicomNode.objects.create(department=other_department, name="Theirs", ae_title="MODALITY1")
    client.force_login(department_admin)
    added = client.post(
        "/dicom/", {"name": "CR room", "ae_title": "CR_ROOM", "host": "", "port": "", "direction": "incoming",
                    "enabled": "on"},
    )  # fmt: skip
    assert added.status_code == 302
    assert DicomNode.objects.get(ae_title="CR_ROOM").department_id == department_admin.department_id
    taken = client.post("/dicom/", {"name": "x", "ae_title": "MODALITY1", "direction": "incoming", "enabled": "on"})
    assert taken.status_code == 400
    assert "AE title" in taken.content.decode()
    no_host = client.post("/dicom/", {"name": "x", "ae_title": "PACS9", "direction": "destination", "enabled": "on"})
    assert no_host.status_code == 400
    assert "needs a host and a port" in no_host.content.decode()

    IntakeEvent.objects.create(
        department=department_admin.department, source="dimse", calling_ae="CR_ROOM", outcome="refused",
        code="dicom_not_chest", reason="This DICOM shows body part “KNEE”, not the chest.",
    )  # fmt: skip
    client.force_login(radiologist)
    page = client.get("/dicom/")
    assert page.status_code == 200
    assert "KNEE" in page.content.decode()
    assert "MODALITY1" not in page.content.decode()
    assert client.post("/dicom/", {"name": "y", "ae_title": "Y", "direction": "incoming"}).status_code == 403


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: pydicom_file("rtplan.dcm"), "dicom_no_pixels"),
        (lambda: pydicom_file("test-SR.dcm"), "dicom_no_pixels"),
        (
            lambda: rewrite(pydicom_file("JPEG-LL.dcm"), Modality="CR", BodyPartExamined="CHEST"),
            "dicom_unsupported_compression",
        ),
        (lambda: pydicom_file("US1_UNCR.dcm"), "dicom_wrong_modality"),
        (lambda: make_dicom(body_part="ABDOMEN"), "dicom_not_chest"),
    ],
    ids=["rt plan", "structured report", "undecodable", "ultrasound", "abdomen"],
)
def test_stow_refuses_each_kind_the_upload_refuses(api, make, code):
    response = stow(api, make())
    assert response.status_code == 409
    [failed] = response.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xC000]
    event = IntakeEvent.objects.get()
    assert (event.outcome, event.code) == ("refused", code)
    assert event.reason
    assert not Image.objects.exists()


def test_resend_button_is_for_department_admins(client, radiologist, department_admin, outsider, delivery):
    client.force_login(radiologist)
    assert "Resend" not in client.get(f"/cases/{delivery.case_id}/").content.decode()
    assert client.post(f"/dicom/deliveries/{delivery.pk}/resend/").status_code == 403
    client.force_login(outsider)
    assert client.post(f"/dicom/deliveries/{delivery.pk}/resend/").status_code == 404
    client.force_login(department_admin)
    assert "Resend" in client.get(f"/cases/{delivery.case_id}/").content.decode()
    response = client.post(f"/dicom/deliveries/{delivery.pk}/resend/")
    assert response.status_code == 302
    assert response["Location"] == f"/cases/{delivery.case_id}/"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 0)


def test_stow_takes_a_study_larger_than_a_form_up_to_the_upload_limit(api, settings):
    """A study is an upload: held to the upload limit, not to the (smaller) limit of a form."""
    body = multipart(instance(generate_uid(UID_ROOT)))
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = len(body) // 4
    settings.XNET_MAX_UPLOAD_REQUEST_BYTES = len(body) + 1
    response = api.generic("POST", "/dicomweb/studies", body, content_type=STOW_TYPE)
    assert response.status_code == 200, response.content
    assert Image.objects.count() == 1

    settings.XNET_MAX_UPLOAD_REQUEST_BYTES = len(body) - 1
    response = api.generic("POST", "/dicomweb/studies", body, content_type=STOW_TYPE)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert Image.objects.count() == 1
