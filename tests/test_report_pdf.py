"""The signed report as a PDF: rendered for real and read back with pypdf."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from pypdf import PdfReader
from pypdf.generic import ContentStream
from pytest_django.asserts import assertContains

from diagnosis.models import Case, Image
from ml.heatmaps import heatmap_png
from reviews import selectors, services
from reviews.pdf import render_report_pdf
from tests.factories import (
    CaseFactory,
    ImageFactory,
    ModelDeploymentFactory,
    PatientFactory,
    PredictionFactory,
    assistive,
    png_bytes,
)

pytestmark = pytest.mark.django_db


def heatmap() -> bytes:
    """A heatmap as the worker stores it (ml.heatmaps): hot in the centre, transparent outside."""
    y, x = np.mgrid[-1:1:64j, -1:1:64j]
    return heatmap_png(np.clip(1 - np.hypot(x, y), 0, 1))


def pdf_text(content: bytes) -> str:
    """The PDF's text with whitespace collapsed (table cells come out on lines of their own)."""
    reader = PdfReader(io.BytesIO(content))
    return " ".join(" ".join(page.extract_text() for page in reader.pages).split())


def pictures_drawn(content: bytes) -> int:
    """Images drawn on the pages: reportlab stores identical pictures once (the factory's images
    are all the same PNG), so count the drawing operators, not the stored images."""
    count = 0
    for page in PdfReader(io.BytesIO(content)).pages:
        names = set(page["/Resources"].get("/XObject", {}).keys())
        operations = ContentStream(page.get_contents(), page.pdf).operations
        count += sum(1 for operands, operator in operations if operator == b"Do" and operands[0] in names)
    return count


@pytest.fixture
def case(radiologist) -> Case:
    patient = PatientFactory(
        department=radiologist.department, created_by=radiologist, name="Ada Lovelace", mrn="XR-4711"
    )
    case = CaseFactory(patient=patient, created_by=radiologist, indication="Fever and cough for five days.")
    # The results below are of xray-tiny, the department's assistive X-ray model (issue 12).
    assistive(ModelDeploymentFactory(department=patient.department, model_name="xray-tiny", model_version="1.0.0"))
    PredictionFactory(
        job__image__case=case,
        model_name="xray-tiny",
        model_version="1.0.0",
        heatmap=ContentFile(heatmap(), name="heat.png"),
    )
    # A DICOM upload: the PDF shows its rendered PNG (the stored object itself is no picture).
    dicom = ImageFactory(
        case=case,
        format=Image.Format.DICOM,
        file=ContentFile(b"\0" * 128 + b"DICM not really", name="slice.dcm"),
        rendered=ContentFile(png_bytes(), name="slice.png"),
        dicom={"study_date": "2026-03-01", "view_position": "PA"},
    )
    PredictionFactory(
        job__image=dicom,
        model_name="xray-tiny",
        model_version="1.0.0",
        top_label="normal",
        probabilities={"normal": 0.8, "pneumonia": 0.1, "covid": 0.05, "tuberculosis": 0.05},
        top_probability=0.8,
    )
    return case


def test_report_pdf_text(rad_client, radiologist, installed_models, case):
    radiologist.first_name, radiologist.last_name = "Grace", "Hopper"
    radiologist.save()
    services.report_sign(
        case=case,
        signed_by=radiologist,
        agrees_with_ai=False,
        final_label="tuberculosis",
        impression="Cavitating lesion in the right upper lobe.",
    )
    services.addendum_add(case=case, author=radiologist, text="Sputum sample requested.")
    response = rad_client.get(reverse("report_pdf", args=[case.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert f'filename="xnet-report-case-{case.pk}.pdf"' in response["Content-Disposition"]
    text = pdf_text(response.content)
    for expected in (
        f"XNET report: case {case.pk}",
        "Ada Lovelace",
        "XR-4711",
        "Chest X-ray",
        "Fever and cough for five days.",
        "AI finding Pneumonia",
        "70.0 %",
        "xray-tiny 1.0.0",
        "Finding Tuberculosis",
        "Agrees with AI no",
        "Cavitating lesion in the right upper lobe.",
        "Signed by Grace Hopper",
        "Sputum sample requested.",
        "Software tests only: an untrained network with random weights.",
        "Heatmap (Grad-CAM, top class) drawn over the image",
        "Plain image. No heatmap.",
        "Study date 2026-03-01, view PA",
    ):
        assert expected in text, expected
    assert "could not be read" not in text
    assert "temperature" not in text  # a model detail for the model card, not the patient's record
    # The image with a heatmap shows twice (plain, and with the heatmap over it); the other once.
    assert pictures_drawn(response.content) == 3


def test_report_pdf_without_installed_model_or_heatmap(radiologist, settings, tmp_path, case):
    settings.XNET_MODEL_DIR = tmp_path / "no-models"
    report = services.report_sign(case=case, signed_by=radiologist, agrees_with_ai=True, impression="As AI.")
    case = selectors.case_for_review(user=radiologist, case_id=case.pk)
    text = pdf_text(render_report_pdf(report=selectors.report_for_case(case=case), case=case))
    assert "not available (the model is not installed here)" in text
    assert "AI finding Pneumonia" in text
    assert f"Finding {report.final_label.capitalize()} Agrees with AI yes" in text


def test_missing_image_file_still_renders(radiologist, case):
    image = case.images.first()
    image.file.storage.delete(image.file.name)
    services.report_sign(case=case, signed_by=radiologist, agrees_with_ai=True, impression="As AI.")
    case = selectors.case_for_review(user=radiologist, case_id=case.pk)
    text = pdf_text(render_report_pdf(report=selectors.report_for_case(case=case), case=case))
    assert "The image file could not be read." in text


def test_pdf_of_an_unsigned_case_is_409_with_message(rad_client, case):
    response = rad_client.get(reverse("report_pdf", args=[case.pk]))
    assertContains(response, "the PDF report exists once the case is signed", status_code=409)


def test_pdf_of_another_departments_case_is_404(client, outsider, radiologist, case):
    services.report_sign(case=case, signed_by=radiologist, agrees_with_ai=True, impression="As AI.")
    client.force_login(outsider)
    assert client.get(reverse("report_pdf", args=[case.pk])).status_code == 404
