"""After signing, a case's images and results are frozen.

Before: a signed case took new images, the new AI result replaced the worklist's finding while the
case stayed "signed", and the signed report's PDF grew an image uploaded after the signature.
"""

from __future__ import annotations

import io
import threading
import time

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, connections, transaction
from django.urls import reverse
from pypdf import PdfReader

from diagnosis import services as diagnosis_services
from diagnosis.models import Case, Image, InferenceJob, Modality
from reviews import selectors, services
from reviews.pdf import render_report_pdf
from tests.conftest import media_files
from tests.factories import (
    CaseFactory,
    ImageFactory,
    InferenceJobFactory,
    PatientFactory,
    PredictionFactory,
    png_bytes,
)

pytestmark = pytest.mark.django_db


def upload(data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile("late.jpg", data, content_type="image/jpeg")


def pdf_text(content: bytes) -> str:
    reader = PdfReader(io.BytesIO(content))
    return " ".join(" ".join(page.extract_text() for page in reader.pages).split())


@pytest.fixture
def signed_case(radiologist) -> Case:
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, mrn="MRN-77")
    case = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)
    PredictionFactory(job__image__case=case, job__image__uploaded_by=radiologist)
    services.report_sign(case=case, signed_by=radiologist, agrees_with_ai=True, impression="Pneumonia, right.")
    return case


def test_api_upload_to_a_signed_case_is_409_and_writes_nothing(api, signed_case, chest_xray_bytes, settings):
    files_before = media_files(settings.MEDIA_ROOT)
    response = api.post(f"/api/v1/cases/{signed_case.pk}/images/", {"file": upload(chest_xray_bytes)})

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "case_signed"
    assert f"Case {signed_case.pk} is signed" in error["message"]
    assert "new case for this patient" in error["message"]
    assert signed_case.images.count() == 1
    assert InferenceJob.objects.count() == 1
    assert media_files(settings.MEDIA_ROOT) == files_before


def test_page_upload_to_a_signed_case_is_refused_with_a_new_case_link(
    rad_client, signed_case, chest_xray_bytes, settings
):
    response = rad_client.post(reverse("case_upload", args=[signed_case.pk]), {"images": [upload(chest_xray_bytes)]})

    assert response.status_code == 409
    text = response.content.decode()
    assert f"Case {signed_case.pk} is signed: its images and results are frozen" in text
    assert "New case for this patient" in text
    assert f"{reverse('case_create')}?mrn=MRN-77&amp;modality=xray" in text
    assert signed_case.images.count() == 1


def test_signed_case_page_offers_a_new_case_instead_of_the_upload_form(rad_client, signed_case):
    response = rad_client.get(reverse("case_detail", args=[signed_case.pk]))
    text = response.content.decode()
    assert reverse("case_upload", args=[signed_case.pk]) not in text
    assert "New case for this patient" in text
    # The link opens the new-case form for the same patient and modality.
    form = rad_client.get(f"{reverse('case_create')}?mrn=MRN-77&modality=xray").content.decode()
    assert 'value="MRN-77"' in form


def test_upload_service_refuses_a_signed_case(radiologist, signed_case, chest_xray_bytes):
    with pytest.raises(diagnosis_services.CaseConflict) as caught:
        diagnosis_services.image_upload(case=signed_case, file=upload(chest_xray_bytes), uploaded_by=radiologist)
    assert caught.value.code == "case_signed"


def test_unsigned_case_still_takes_images(api, radiologist, chest_xray_bytes):
    case = CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))
    response = api.post(f"/api/v1/cases/{case.pk}/images/", {"file": upload(chest_xray_bytes)})
    assert response.status_code == 202


def test_a_result_arriving_after_signing_does_not_change_the_worklist_finding(radiologist):
    case = CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))
    PredictionFactory(job__image__case=case, top_label="normal", top_probability=0.9, probabilities={"normal": 0.9})
    waiting = InferenceJobFactory(image__case=case)  # still pending when the case is signed
    services.report_sign(case=case, signed_by=radiologist, agrees_with_ai=True, impression="Normal.")
    case.refresh_from_db()
    assert (case.lead_label, case.lead_probability) == ("normal", 0.9)

    claimed = diagnosis_services.job_claim(job_id=waiting.pk)
    diagnosis_services.job_succeed(
        job_id=claimed.pk,
        attempt=claimed.attempt,
        model_name="test-xray",
        model_version="1.0.0",
        probabilities={"normal": 0.02, "pneumonia": 0.98},
    )

    case.refresh_from_db()
    assert (case.lead_label, case.lead_probability) == ("normal", 0.9)  # what the report recorded


def picture(size: int) -> ContentFile:
    return ContentFile(png_bytes(size, size), name="chest.png")


def test_pdf_shows_only_what_was_signed(radiologist):
    case = CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))
    # Pictures of different sizes: the PDF embeds identical pictures once, and the count below
    # is of pictures drawn.
    PredictionFactory(
        job__image__case=case, job__image__file=picture(128), top_label="pneumonia", top_probability=0.7
    )
    waiting = InferenceJobFactory(image__case=case, image__file=picture(96))  # its result arrives after signing
    report = services.report_sign(case=case, signed_by=radiologist, agrees_with_ai=True, impression="Pneumonia.")
    claimed = diagnosis_services.job_claim(job_id=waiting.pk)
    diagnosis_services.job_succeed(
        job_id=claimed.pk,
        attempt=claimed.attempt,
        model_name="test-xray",
        model_version="1.0.0",
        probabilities={"normal": 0.01, "covid": 0.99},
    )
    # An image added after signing by a path the upload service does not guard (the admin,
    # a data repair, a record from before this fix): the PDF must not show it either.
    late = ImageFactory(case=case, file=picture(64))
    PredictionFactory(job__image=late, top_label="tuberculosis", top_probability=0.95)
    assert Image.objects.filter(case=case).count() == 3

    fresh = selectors.case_for_review(user=radiologist, case_id=case.pk)
    content = render_report_pdf(report=selectors.report_for_case(case=fresh), case=fresh)
    text = pdf_text(content)

    assert "Images 2" in text
    assert "Image 1 of 2" in text
    assert "Image 2 of 2" in text
    assert "of 3" not in text
    assert "AI: Pneumonia 70.0 %" in text
    assert "AI: pending when signed." in text
    assert "Covid" not in text
    assert "Tuberculosis" not in text
    assert sum(len(page.images) for page in PdfReader(io.BytesIO(content)).pages) == 2
    assert len(report.ai_results) == 2


@pytest.mark.django_db(transaction=True)
def test_an_upload_waiting_on_a_signature_is_refused_once_it_commits(radiologist, chest_xray_bytes):
    """The upload passed the first check before the signature committed; it waits on the case row
    lock that signing holds, then finds the report and is refused (nothing written)."""
    case = CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))
    PredictionFactory(job__image__case=case, job__image__uploaded_by=radiologist)
    outcome: list[str] = []

    def upload_now() -> None:
        try:
            diagnosis_services.image_upload(case=case, file=upload(chest_xray_bytes), uploaded_by=radiologist)
            outcome.append("stored")
        except diagnosis_services.CaseConflict as exc:
            outcome.append(exc.code)
        finally:
            connection.close()

    with transaction.atomic():
        services.report_sign(case=case, signed_by=radiologist, agrees_with_ai=True, impression="Pneumonia.")
        uploader = threading.Thread(target=upload_now)
        uploader.start()
        # Commit only once the upload is blocked on the row lock (PostgreSQL says so), not after
        # a guessed delay; the thread join below bounds a hang.
        while not _someone_waits_on_a_lock():
            assert uploader.is_alive(), outcome
            time.sleep(0.01)
    uploader.join(timeout=60)

    assert outcome == ["case_signed"]
    assert Image.objects.filter(case=case).count() == 1


def _someone_waits_on_a_lock() -> bool:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # a new look, not this transaction's first one
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0
