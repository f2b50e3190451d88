"""Images are numbered by their position in the case everywhere, not by database id.

Before, the case page said "image 3" for a case's second image and a two-image PDF said "Image 15".
"""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from pypdf import PdfReader

from diagnosis import services
from diagnosis.models import InferenceJob
from reviews import selectors
from reviews import services as review_services
from reviews.pdf import render_report_pdf
from tests.factories import CaseFactory, ImageFactory, PatientFactory, PredictionFactory, png_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def case(radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    # Other cases' images first, so that ids and positions differ.
    for _ in range(3):
        ImageFactory(case__patient=patient)
    case = CaseFactory(patient=patient, created_by=radiologist)
    files = [SimpleUploadedFile(f"{name}.png", png_bytes()) for name in ("first", "second")]
    for job in services.images_upload(case=case, files=files, uploaded_by=radiologist):
        job.status, job.attempt = InferenceJob.Status.SUCCEEDED, 1
        job.save()
        PredictionFactory(job=job, top_label="pneumonia", top_probability=0.6 + 0.1 * job.image.position)
    return case


def test_uploads_are_numbered_from_one_in_each_case(case):
    images = list(case.images.order_by("position"))
    assert [image.position for image in images] == [1, 2]
    assert images[1].pk > 2  # the database id is something else


def test_api_gives_the_position(api, case):
    images = api.get(f"/api/v1/cases/{case.pk}/").json()["images"]
    assert [(image["position"], image["original_name"]) for image in images] == [(1, "first.png"), (2, "second.png")]


def test_case_page_and_sign_off_name_images_by_position(rad_client, case):
    second = case.images.get(position=2)
    page = rad_client.get(reverse("case_detail", args=[case.pk])).content.decode()
    assert 'class="image-number">Image 1<' in page
    assert 'class="image-number">Image 2<' in page
    assert f"Image {second.pk}<" not in page
    # The leading finding (the more probable pneumonia) is on the second image.
    assert "(image 2, test-xray 1.0.0)" in page


def test_patient_page_lists_positions(rad_client, case):
    page = rad_client.get(reverse("patient_detail", args=[case.patient_id])).content.decode()
    assert '<td class="image-number">2</td>' in page


def test_pdf_names_images_by_position(radiologist, case):
    review_services.report_sign(case=case, signed_by=radiologist, agrees_with_ai=True, impression="Pneumonia.")
    fresh = selectors.case_for_review(user=radiologist, case_id=case.pk)
    content = render_report_pdf(report=selectors.report_for_case(case=fresh), case=fresh)
    text = " ".join(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages).split())
    assert "Image 1 of 2 Plain image. No heatmap. 128 x 128 PNG" in text
    assert "Image 2 of 2 Plain image. No heatmap. 128 x 128 PNG" in text
    for image in case.images.all():
        assert f"Image {image.pk}:" not in text
