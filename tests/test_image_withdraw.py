"""Withdrawing a mistaken upload: the uploader or a department admin, with a reason, audited.

The image leaves pages, the worklist and the API; its row and file stay. Before, a mistaken
upload could not be removed at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from diagnosis import services
from diagnosis.models import Case, Image, InferenceJob
from reviews import services as review_services
from tests.conftest import token_client
from tests.factories import (
    CaseFactory,
    DepartmentAdminFactory,
    ImageFactory,
    InferenceJobFactory,
    PatientFactory,
    PredictionFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

REASON = "Uploaded to the wrong patient's case."


@pytest.fixture
def case(radiologist) -> Case:
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    return CaseFactory(patient=patient, created_by=radiologist)


@pytest.fixture
def kept(case, radiologist) -> Image:
    """The first image: stays."""
    prediction = PredictionFactory(
        job__image__case=case, job__image__uploaded_by=radiologist, top_label="normal", top_probability=0.8
    )
    prediction.job.image.refresh_from_db()
    return prediction.job.image


@pytest.fixture
def mistaken(case, radiologist, kept) -> Image:
    """The second image, uploaded by mistake: an AI-positive result that leads the worklist."""
    prediction = PredictionFactory(
        job__image__case=case, job__image__uploaded_by=radiologist, top_label="pneumonia", top_probability=0.95
    )
    image = prediction.job.image
    image.refresh_from_db()
    return image


def withdraw(client, image: Image, reason: str = REASON):
    return client.post(f"/api/v1/images/{image.pk}/withdraw/", {"reason": reason}, format="json")


def test_uploader_withdraws_through_the_api(api, rad_client, radiologist, case, kept, mistaken):
    case.refresh_from_db()
    assert case.lead_label == "pneumonia"
    path = Path(mistaken.file.path)

    response = withdraw(api, mistaken)

    assert response.status_code == 200, response.content
    assert response.json()["position"] == 2
    # Gone from the API...
    assert api.get(f"/api/v1/images/{mistaken.pk}/").status_code == 404
    assert api.get(f"/api/v1/images/{mistaken.pk}/file/").status_code == 404
    assert api.get(f"/api/v1/jobs/{mistaken.jobs.get().pk}/").status_code == 404
    assert [image["id"] for image in api.get(f"/api/v1/cases/{case.pk}/").json()["images"]] == [kept.pk]
    listed = api.get("/api/v1/cases/").json()["results"][0]
    assert listed["top_label"] == "normal"
    # ...from the pages and the worklist (its finding was the case's lead)...
    page = rad_client.get(reverse("case_detail", args=[case.pk])).content.decode()
    assert reverse("image_file", args=[mistaken.pk]) not in page
    assert rad_client.get(reverse("image_file", args=[mistaken.pk])).status_code == 404
    case.refresh_from_db()
    assert (case.lead_label, case.lead_probability) == ("normal", 0.8)
    assert "Pneumonia" not in rad_client.get(reverse("worklist")).content.decode()
    # ...but the row and the file are kept, with who, when and why.
    mistaken.refresh_from_db()
    assert (mistaken.withdrawn_by, mistaken.withdrawal_reason) == (radiologist, REASON)
    assert mistaken.withdrawn_at is not None
    assert path.is_file()
    event = AuditEvent.objects.get(action=AuditEvent.Action.IMAGE_WITHDRAW)
    assert (event.actor, event.object_type, event.object_id) == (radiologist, "image", str(mistaken.pk))
    assert event.department_id == radiologist.department_id
    assert event.detail == {"case": case.pk, "position": 2, "reason": REASON}


def test_department_admin_may_withdraw_anothers_upload(department_admin, mistaken):
    assert withdraw(token_client(department_admin), mistaken).status_code == 200


def test_another_radiologist_may_not(radiologist, mistaken):
    colleague = UserFactory(department=radiologist.department)
    response = withdraw(token_client(colleague), mistaken)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    mistaken.refresh_from_db()
    assert mistaken.withdrawn_at is None


def test_another_department_gets_404(outsider_api, outsider, mistaken):
    DepartmentAdminFactory(department=outsider.department)
    assert withdraw(outsider_api, mistaken).status_code == 404
    mistaken.refresh_from_db()
    assert mistaken.withdrawn_at is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reason": "   "}, "reason"),
        ({}, "reason"),
        ({"reason": "x" * 2001}, "reason"),
        ({"reason": "ok", "x": 1}, "x"),
    ],
    ids=["blank", "missing", "too-long", "unknown-field"],
)
def test_a_withdrawal_needs_a_reason(api, mistaken, body, field):
    response = api.post(f"/api/v1/images/{mistaken.pk}/withdraw/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    mistaken.refresh_from_db()
    assert mistaken.withdrawn_at is None
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.IMAGE_WITHDRAW).exists()


def test_an_image_of_a_signed_case_cannot_be_withdrawn(api, radiologist, case, mistaken):
    review_services.report_sign(case=case, signed_by=radiologist, agrees_with_ai=True, impression="Pneumonia.")
    response = withdraw(api, mistaken)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "case_signed"
    mistaken.refresh_from_db()
    assert mistaken.withdrawn_at is None


def test_a_pending_job_of_a_withdrawn_image_is_not_run(radiologist, case):
    image = ImageFactory(case=case, uploaded_by=radiologist)
    job = InferenceJobFactory(image=image)
    services.image_withdraw(image=image, withdrawn_by=radiologist, reason=REASON)
    job.refresh_from_db()
    assert job.status == InferenceJob.Status.FAILED
    assert job.error_message == "The image was withdrawn before it was classified."
    assert services.job_claim(job_id=job.pk) is None


def test_positions_are_never_reused(api, radiologist, case, kept, mistaken, chest_xray_bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    withdraw(api, mistaken)
    response = api.post(
        f"/api/v1/cases/{case.pk}/images/", {"file": SimpleUploadedFile("c.jpg", chest_xray_bytes, "image/jpeg")}
    )
    assert response.status_code == 202
    assert response.json()["image"]["position"] == 3


# The case page -------------------------------------------------------------------------------


def test_case_page_withdraws_with_a_reason(rad_client, radiologist, case, kept, mistaken):
    page = rad_client.get(reverse("case_detail", args=[case.pk])).content.decode()
    assert reverse("image_withdraw", args=[mistaken.pk]) in page
    assert "Withdraw image 2" in page

    response = rad_client.post(reverse("image_withdraw", args=[mistaken.pk]), {"reason": REASON})

    assert response.status_code == 302
    page = rad_client.get(response["Location"]).content.decode()
    assert "Image 2 withdrawn" in page
    assert reverse("image_file", args=[mistaken.pk]) not in page
    assert AuditEvent.objects.filter(action=AuditEvent.Action.IMAGE_WITHDRAW, object_id=str(mistaken.pk)).exists()


def test_case_page_without_a_reason_is_400(rad_client, case, mistaken):
    response = rad_client.post(reverse("image_withdraw", args=[mistaken.pk]), {"reason": ""})
    assert response.status_code == 400
    assert "Say why the image is withdrawn." in response.content.decode()
    mistaken.refresh_from_db()
    assert mistaken.withdrawn_at is None


def test_case_page_offers_the_button_to_the_uploader_and_admins_only(client, radiologist, department_admin, mistaken):
    url = reverse("image_withdraw", args=[mistaken.pk])
    case_url = reverse("case_detail", args=[mistaken.case_id])
    colleague = UserFactory(department=radiologist.department)
    client.force_login(colleague)
    assert url not in client.get(case_url).content.decode()
    assert client.post(url, {"reason": REASON}).status_code == 403
    client.force_login(department_admin)
    assert url in client.get(case_url).content.decode()


def test_signed_case_page_has_no_withdraw_button(rad_client, radiologist, case, mistaken):
    review_services.report_sign(case=case, signed_by=radiologist, agrees_with_ai=True, impression="Pneumonia.")
    page = rad_client.get(reverse("case_detail", args=[case.pk])).content.decode()
    assert reverse("image_withdraw", args=[mistaken.pk]) not in page
    response = rad_client.post(reverse("image_withdraw", args=[mistaken.pk]), {"reason": REASON})
    assert response.status_code == 409
    assert "is signed" in response.content.decode()
