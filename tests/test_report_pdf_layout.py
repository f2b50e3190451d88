"""The report PDF as a clinician reads it (issue 13): every page names the patient, record number
and case with "Page N of M"; the radiologist's reading comes before the AI result and the images;
each image is captioned by its position and the AI result names the image it came from.

Rendered for real and read back page by page with pypdf.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.base import ContentFile
from pypdf import PdfReader

from diagnosis import services as diagnosis_services
from ml.heatmaps import heatmap_png
from reviews import selectors, services
from reviews.pdf import render_report_pdf
from reviews.services import MAX_TEXT_LENGTH
from tests.factories import CaseFactory, PatientFactory, PredictionFactory
from tests.test_report_pdf import pictures_drawn

pytestmark = pytest.mark.django_db


def heatmap() -> bytes:
    y, x = np.mgrid[-1:1:64j, -1:1:64j]
    return heatmap_png(np.clip(1 - np.hypot(x, y), 0, 1))


def pages(content: bytes) -> list[str]:
    """Each page's text with whitespace collapsed."""
    return [" ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(content)).pages]


@pytest.fixture
def case(radiologist):
    patient = PatientFactory(
        department=radiologist.department, created_by=radiologist, name="Ada Lovelace", mrn="XR-4711"
    )
    case = CaseFactory(patient=patient, created_by=radiologist)
    # Three images; the second has the leading AI finding (the highest probability) and a heatmap.
    for probability, heat in ((0.55, None), (0.91, heatmap()), (0.6, None)):
        PredictionFactory(
            job__image__case=case,
            top_probability=probability,
            heatmap=ContentFile(heat, name="heat.png") if heat else None,
        )
    return case


def render(radiologist, case, impression: str) -> bytes:
    services.report_sign(case=case, signed_by=radiologist, agrees_with_ai=True, impression=impression)
    case = selectors.case_for_review(user=radiologist, case_id=case.pk)
    return render_report_pdf(report=selectors.report_for_case(case=case), case=case)


def test_every_page_of_a_multi_page_report_has_the_header(radiologist, case):
    texts = pages(render(radiologist, case, "Consolidation, right lower lobe. " * (MAX_TEXT_LENGTH // 40)))

    assert len(texts) >= 3
    for number, text in enumerate(texts, start=1):
        assert f"Ada Lovelace · MRN XR-4711 · Case {case.pk}" in text, number
        assert f"Page {number} of {len(texts)}" in text, number


def test_a_long_name_is_cut_in_the_header_and_the_page_count_stays(radiologist, case):
    case.patient.name = "Maria " + "Anna-Lena " * 18 + "Schmidt"  # 199 characters, the field holds 200
    case.patient.save()
    texts = pages(render(radiologist, case, "No acute finding."))

    for number, text in enumerate(texts, start=1):
        assert f"Page {number} of {len(texts)}" in text
        assert f"… · MRN XR-4711 · Case {case.pk}" in text  # the name is cut, not the record number


def test_sections_come_in_reading_order(radiologist, case):
    text = " ".join(pages(render(radiologist, case, "Lobar pneumonia, right lower lobe.")))

    order = [
        "Patient",
        "Indication",
        "Radiologist",
        "Finding Pneumonia",
        "Impression",
        "Lobar pneumonia, right lower lobe.",
        "AI result (as shown when signing)",
        "Image 1 of 3",
        "Image 2 of 3",
        "Image 3 of 3",
        "Intended use of the model",
    ]
    position = 0
    for heading in order:  # each after the one before (find() is -1 when it is not there)
        position = text.find(heading, position)
        assert position >= 0, heading


def test_the_ai_result_names_its_image_and_each_image_shows_plain_and_with_heatmap(radiologist, case):
    content = render(radiologist, case, "As AI.")
    text = " ".join(pages(content))

    assert "AI finding Pneumonia Probability 91.0 % From Image 2 of 3" in text
    assert text.count("Plain image. No heatmap.") == 2  # images 1 and 3
    assert text.count("Heatmap (Grad-CAM, top class) drawn over the image") == 1  # image 2, beside its plain copy
    assert pictures_drawn(content) == 4
    assert "temperature" not in text.lower()


def test_a_withdrawn_image_keeps_the_case_numbers_in_captions(radiologist, case):
    first = case.images.order_by("position").first()
    diagnosis_services.image_withdraw(image=first, withdrawn_by=radiologist, reason="Wrong patient.")
    text = " ".join(pages(render(radiologist, case, "As AI.")))

    assert "Image 1 of 2 (image 2 of the case)" in text
    assert "Image 2 of 2 (image 3 of the case)" in text
    assert "From Image 1 of 2 (image 2 of the case)" in text
