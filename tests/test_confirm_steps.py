"""Confirmation before signing and before deactivating a user; no "Agree with the AI finding"
without an AI result (issue 13). The steps are pages of their own: they work without script."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from pytest_django.asserts import assertContains, assertNotContains

from reviews.models import Report
from tests.factories import CaseFactory, ImageFactory, PatientFactory, PredictionFactory, UserFactory

pytestmark = pytest.mark.django_db

SIGN = {"decision": "agree", "final_label": "", "other_finding": "", "impression": "Right lower lobe consolidation."}


@pytest.fixture
def case(radiologist):
    case = CaseFactory(
        patient=PatientFactory(department=radiologist.department, created_by=radiologist, name="Ada Lovelace")
    )
    PredictionFactory(job__image__case=case)  # pneumonia 70 %
    return case


@pytest.fixture
def case_without_ai(radiologist):
    case = CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))
    ImageFactory(case=case)  # uploaded, not classified
    return case


def test_the_sign_button_goes_to_the_check_page_first(rad_client, case):
    page = rad_client.get(reverse("case_detail", args=[case.pk])).content.decode()
    button = re.search(r'<button type="submit" class="primary"[^>]*>Sign report…</button>', page)
    assert button is not None
    assert f'formaction="{reverse("report_sign_confirm", args=[case.pk])}"' in button.group(0)


def test_the_check_page_shows_the_report_and_signs_nothing(rad_client, case):
    response = rad_client.post(reverse("report_sign_confirm", args=[case.pk]), SIGN)

    assert response.status_code == 200
    assertContains(response, f"Sign the report of case {case.pk}?")
    assertContains(response, "Ada Lovelace")
    assertContains(response, '<dd class="confirm-finding"><strong>Pneumonia</strong>')
    assertContains(response, "agrees with AI")
    assertContains(response, "Right lower lobe consolidation.")
    assertContains(response, f'action="{reverse("report_sign", args=[case.pk])}"')
    assertContains(response, "Sign and lock the report")
    assert not Report.objects.filter(case=case).exists()

    # Its form signs, with what was checked.
    assert rad_client.post(reverse("report_sign", args=[case.pk]), SIGN).status_code == 302
    assert Report.objects.get(case=case).final_label == "pneumonia"


def test_the_check_page_shows_an_override(rad_client, case):
    data = {**SIGN, "decision": "override", "final_label": "other", "other_finding": "Rib fracture"}
    response = rad_client.post(reverse("report_sign_confirm", args=[case.pk]), data)
    assertContains(response, "Other finding: Rib fracture")
    assertContains(response, "overrides AI")


def test_the_check_page_answers_errors_as_signing_does(rad_client, case):
    response = rad_client.post(reverse("report_sign_confirm", args=[case.pk]), {**SIGN, "impression": ""})
    assertContains(response, "Write an impression before signing.", status_code=400)
    assert not Report.objects.filter(case=case).exists()


def test_the_check_page_of_a_signed_case_is_409(rad_client, case):
    assert rad_client.post(reverse("report_sign", args=[case.pk]), SIGN).status_code == 302
    response = rad_client.post(reverse("report_sign_confirm", args=[case.pk]), SIGN)
    assertContains(response, "already signed", status_code=409)
    assert Report.objects.filter(case=case).count() == 1


def test_the_check_page_of_another_departments_case_is_404(client, outsider, case):
    client.force_login(outsider)
    assert client.post(reverse("report_sign_confirm", args=[case.pk]), SIGN).status_code == 404


def test_agree_is_not_offered_without_an_ai_result(rad_client, case_without_ai):
    response = rad_client.get(reverse("case_detail", args=[case_without_ai.pk]))
    assertNotContains(response, "Agree with the AI finding")
    assertContains(response, "Override: my finding is")
    assert re.search(r'<input type="radio" name="decision" value="override"[^>]*checked', response.content.decode())


def test_agree_is_offered_with_an_ai_result(rad_client, case):
    assertContains(rad_client.get(reverse("case_detail", args=[case.pk])), "Agree with the AI finding")


def test_the_check_page_refuses_an_agreement_without_an_ai_result(rad_client, case_without_ai):
    response = rad_client.post(reverse("report_sign_confirm", args=[case_without_ai.pk]), SIGN)
    assertContains(response, "There is no AI result to agree with", status_code=400)
    assertNotContains(response, "Agree with the AI finding", status_code=400)


# Deactivating a user ------------------------------------------------------------------------


@pytest.fixture
def colleague(department):
    return UserFactory(username="rad_c", first_name="Carl", last_name="Colleague", department=department)


def test_deactivate_is_a_link_to_a_confirmation_not_a_post(admin_client, colleague):
    url = reverse("user_edit", args=[colleague.pk])
    page = admin_client.get(url).content.decode()
    assert 'href="?confirm=deactivate#access">Deactivate rad_c…</a>' in page
    assert 'name="action" value="deactivate"' not in page  # no one-click form

    confirm = admin_client.get(url, {"confirm": "deactivate"})
    assertContains(confirm, "Deactivate Carl Colleague (rad_c)?")
    assertContains(confirm, 'name="action" value="deactivate"')
    assertContains(confirm, "Yes, deactivate rad_c")
    assertContains(confirm, f'href="{url}">Cancel</a>')
    colleague.refresh_from_db()
    assert colleague.is_active  # asking deactivates nothing

    assert admin_client.post(url, {"action": "deactivate"}).status_code == 302
    colleague.refresh_from_db()
    assert not colleague.is_active


def test_reactivate_needs_no_confirmation(admin_client, colleague):
    colleague.is_active = False
    colleague.save()
    page = admin_client.get(reverse("user_edit", args=[colleague.pk])).content.decode()
    assert 'name="action" value="reactivate"' in page
