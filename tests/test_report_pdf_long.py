"""Free text of the documented maximum length goes into the PDF over several pages.

An impression of about 4,500 characters or more used to sit in one table cell, which reportlab
cannot split across pages: the PDF raised LayoutError (a 500) for a report locked for good.
"""

from __future__ import annotations

import io

import pytest
from django.urls import reverse
from pypdf import PdfReader

from reviews import selectors, services
from reviews.models import Report
from reviews.pdf import render_report_pdf
from reviews.services import MAX_TEXT_LENGTH
from tests.factories import CaseFactory, PatientFactory, PredictionFactory

pytestmark = pytest.mark.django_db

SENTENCE = "Patchy ground-glass opacities in both lower lobes, no effusion. "


def exactly(text: str, length: int) -> str:
    """`text` repeated and cut to `length` characters, ending in a marker we can find."""
    end = " END-OF-TEXT"
    return (text * (length // len(text) + 1))[: length - len(end)] + end


SHAPES = {
    "sentences": exactly(SENTENCE, MAX_TEXT_LENGTH),
    "one line per finding": exactly("Finding noted.\n", MAX_TEXT_LENGTH),
    "one unbroken word": "x" * (MAX_TEXT_LENGTH - 12) + " END-OF-TEXT",
}


def pages_and_text(content: bytes) -> tuple[int, str]:
    reader = PdfReader(io.BytesIO(content))
    return len(reader.pages), " ".join(" ".join(page.extract_text() for page in reader.pages).split())


@pytest.fixture
def case(radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    case = CaseFactory(patient=patient, created_by=radiologist)
    PredictionFactory(job__image__case=case)
    return case


@pytest.mark.parametrize("impression", SHAPES.values(), ids=SHAPES.keys())
def test_impression_of_the_maximum_length_renders_over_pages(rad_client, radiologist, case, impression):
    assert len(impression) == MAX_TEXT_LENGTH
    services.report_sign(case=case, signed_by=radiologist, agrees_with_ai=True, impression=impression)

    response = rad_client.get(reverse("report_pdf", args=[case.pk]))

    assert response.status_code == 200
    pages, text = pages_and_text(response.content)
    assert pages >= 2
    assert "Impression" in text
    assert text.index("Impression") < text.index("END-OF-TEXT")  # the whole text, to its last word
    assert "Intended use of the model" in text  # and the report goes on after it


def test_other_finding_and_impression_of_the_maximum_length_render(radiologist, case):
    services.report_sign(
        case=case,
        signed_by=radiologist,
        agrees_with_ai=False,
        final_label=Report.OTHER,
        other_finding=exactly("Rib fracture, left seventh rib. ", MAX_TEXT_LENGTH),
        impression=exactly(SENTENCE, MAX_TEXT_LENGTH),
    )
    case = selectors.case_for_review(user=radiologist, case_id=case.pk)
    pages, text = pages_and_text(render_report_pdf(report=selectors.report_for_case(case=case), case=case))
    assert pages >= 3
    assert "Finding Other finding (described below)" in text
    assert text.count("END-OF-TEXT") == 2


def test_api_pdf_of_a_long_impression(api, radiologist, case):
    services.report_sign(
        case=case, signed_by=radiologist, agrees_with_ai=True, impression=exactly(SENTENCE, MAX_TEXT_LENGTH)
    )
    response = api.get(f"/api/v1/cases/{case.pk}/report.pdf")
    assert response.status_code == 200
    assert pages_and_text(response.content)[0] >= 2
