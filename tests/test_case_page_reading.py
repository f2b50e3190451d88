"""The case page's reading-room context, server side: priors, next/previous case links that keep
the worklist's filters, the header essentials, and the sign-off fragment composed in by reviews."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from pytest_django.asserts import assertContains, assertNotContains

from diagnosis import services
from diagnosis.models import Case, Modality
from reviews import services as review_services
from tests.dicom_files import make_dicom, upload
from tests.factories import CaseFactory, PatientFactory, png_bytes

pytestmark = pytest.mark.django_db


def add_image(case: Case, user) -> None:
    services.image_upload(case=case, file=SimpleUploadedFile("chest.png", png_bytes()), uploaded_by=user)


def aged(case: Case, days: int) -> Case:
    Case.objects.filter(pk=case.pk).update(created_at=timezone.now() - timedelta(days=days))
    case.refresh_from_db()
    return case


def test_priors_are_earlier_cases_of_the_same_modality_with_their_signed_finding(rad_client, radiologist, outsider):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    signed = aged(CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY), 30)
    add_image(signed, radiologist)
    review_services.report_sign(
        case=signed, signed_by=radiologist, agrees_with_ai=False, final_label="covid", impression="Bilateral GGO."
    )
    unsigned = aged(CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY), 10)
    ct = aged(CaseFactory(patient=patient, created_by=radiologist, modality=Modality.CT), 5)
    current = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)
    later = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)
    aged(later, -1)  # after the current one: not a prior
    other_patient = CaseFactory(
        patient=PatientFactory(department=radiologist.department, created_by=radiologist), modality=Modality.XRAY
    )
    aged(other_patient, 20)

    response = rad_client.get(reverse("case_detail", args=[current.pk]))
    priors = response.context["priors"]
    assert [prior.pk for prior in priors] == [unsigned.pk, signed.pk]  # newest first
    assert ct.pk not in [prior.pk for prior in priors]
    assertContains(response, f'data-case-id="{signed.pk}"')
    assertContains(response, "<strong>COVID-19</strong>", html=True)
    assertContains(response, "Bilateral GGO.")
    assertContains(response, signed.created_at.strftime("%Y-%m-%d"))
    assertContains(response, "Open image 1 beside")


def test_next_and_previous_case_keep_the_worklist_filters(rad_client, radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    cases = [CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY) for _ in range(3)]
    CaseFactory(patient=patient, created_by=radiologist, modality=Modality.CT)
    response = rad_client.get(reverse("case_detail", args=[cases[1].pk]), {"modality": "xray", "cursor": "abc"})
    links = [response.context["previous_case_url"], response.context["next_case_url"]]
    assert all(link is not None for link in links)
    targets = set()
    for link in links:
        path, _, query = link.partition("?")
        assert query == "modality=xray"  # the filter kept, the worklist's page cursor not
        targets.add(int(path.strip("/").split("/")[-1]))
    assert targets == {cases[0].pk, cases[2].pk}
    assertContains(response, 'class="button next-case"')
    assert response.context["worklist_url"] == f"{reverse('worklist')}?modality=xray"


def test_dicom_essentials_and_viewer_data(rad_client, radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, mrn="MRN-1001", name="Jane Doe")
    case = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)
    image = services.image_upload(
        case=case, file=upload(make_dicom(window=(1000.5, 500))), uploaded_by=radiologist
    ).image
    response = rad_client.get(reverse("case_detail", args=[case.pk]))
    assertContains(response, f'data-pixels-url="{reverse("image_pixels", args=[image.pk])}"')
    assertContains(response, 'data-window-center="1000.5" data-window-width="500.0"')
    assertContains(response, 'data-photometric="MONOCHROME2"')
    assertContains(response, '<dd class="fact-view-position">PA</dd>', html=True)
    assertContains(response, '<dd class="fact-study-date">2026-03-12</dd>', html=True)
    assertContains(response, "(1 of 1)")


def test_signed_case_is_frozen_through_the_fragment(rad_client, radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    case = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)
    add_image(case, radiologist)
    page = rad_client.get(reverse("case_detail", args=[case.pk]))
    assertContains(page, 'data-fragment="signoff"')
    assertContains(page, "Withdraw this image")
    review_services.report_sign(
        case=case, signed_by=radiologist, agrees_with_ai=False, final_label="normal", impression="Clear lungs."
    )
    page = rad_client.get(reverse("case_detail", args=[case.pk]))
    assertContains(page, "Signed report")
    assertNotContains(page, "Withdraw this image")
    assertContains(page, "New case for this patient")


def test_a_sign_off_error_comes_back_in_the_fragment(rad_client, radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    case = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)
    add_image(case, radiologist)
    response = rad_client.post(
        reverse("report_sign", args=[case.pk]), {"decision": "override", "final_label": "normal"}
    )
    assert response.status_code == 400
    assertContains(response, "Write an impression before signing.", status_code=400)
