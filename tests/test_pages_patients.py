"""Patient list and patient page: every case and upload of a patient over time."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from pytest_django.asserts import assertContains, assertNotContains

from tests.factories import (
    CaseFactory,
    ImageFactory,
    InferenceJobFactory,
    PatientFactory,
    PredictionFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def patient(radiologist):
    return PatientFactory(department=radiologist.department, created_by=radiologist, mrn="P-42", name="Marie Curie")


def test_patient_list_shows_department_patients_with_case_counts(rad_client, radiologist, patient, outsider):
    CaseFactory(patient=patient)
    CaseFactory(patient=patient)
    PatientFactory(department=radiologist.department, created_by=radiologist, name="Alan Turing", mrn="P-43")
    PatientFactory(department=outsider.department, created_by=outsider, name="Other Dept Person")
    response = rad_client.get(reverse("patient_list"))
    assert response.status_code == 200
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))
    assert "Marie Curie P-42" in text
    assert "Alan Turing P-43" in text
    assert re.search(r"Marie Curie P-42 \S+ Female 2 ", text)
    assertNotContains(response, "Other Dept Person")


def test_patient_list_search(rad_client, radiologist, patient):
    PatientFactory(department=radiologist.department, created_by=radiologist, name="Alan Turing", mrn="P-43")
    response = rad_client.get(reverse("patient_list"), {"q": "p-42"})
    assertContains(response, "Marie Curie")
    assertNotContains(response, "Alan Turing")
    assertContains(rad_client.get(reverse("patient_list"), {"q": "zzz"}), "No patient matches")


def test_patient_page_shows_cases_and_uploads_over_time(rad_client, radiologist, department, patient):
    colleague = UserFactory(username="dr_second", first_name="Rosalind", last_name="Franklin", department=department)
    now = timezone.now()
    older = CaseFactory(patient=patient, created_at=now - timedelta(days=30), indication="Follow-up after pneumonia")
    newer = CaseFactory(patient=patient, modality="ct", created_at=now)
    first = ImageFactory(case=older, uploaded_at=now - timedelta(days=30), original_name="first.png")
    PredictionFactory(job__image=first, top_label="pneumonia", top_probability=0.9)
    second = ImageFactory(
        case=older, uploaded_by=colleague, uploaded_at=now - timedelta(days=29), original_name="b.png"
    )
    InferenceJobFactory(image=second, status="failed", error_message="boom")
    third = ImageFactory(case=newer, original_name="ct.png")
    InferenceJobFactory(image=third)

    response = rad_client.get(reverse("patient_detail", args=[patient.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    # Newest case first; within a case, uploads in the order they came.
    assert body.index(f'id="case-{newer.pk}"') < body.index(f'id="case-{older.pk}"')
    assert body.index(f'data-image-id="{first.pk}"') < body.index(f'data-image-id="{second.pk}"')
    assertContains(response, "Follow-up after pneumonia")
    assertContains(response, '<td class="uploaded-by">Rosalind Franklin</td>', html=True)
    assertContains(response, f'<td class="uploaded-by">{radiologist.username}</td>', html=True)
    assertContains(response, (now - timedelta(days=29)).strftime("%Y-%m-%d"))
    assertContains(response, "Pneumonia")
    assertContains(response, "90.0 %")
    assertContains(response, '<span class="badge badge-failed">failed</span>', html=True)
    assertContains(response, '<span class="badge badge-pending">pending</span>', html=True)
    assertContains(response, f'src="{reverse("image_file", args=[third.pk])}"')
    assertContains(response, f'href="{reverse("case_create")}?mrn=P-42"')


def test_patient_page_without_cases(rad_client, patient):
    assertContains(rad_client.get(reverse("patient_detail", args=[patient.pk])), "No cases for this patient yet.")


def test_unknown_patient_is_404(rad_client):
    assert rad_client.get(reverse("patient_detail", args=[999999])).status_code == 404
