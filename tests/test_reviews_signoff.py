"""Sign-off on the case page and in reviews.services: agree or override, lock, addenda, refusals."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from pytest_django.asserts import assertContains

from accounts.models import User
from diagnosis.models import Case, InferenceJob
from reviews import services
from reviews.models import Addendum, LockedRecordError, Report
from reviews.services import ReviewConflict
from tests.factories import (
    CaseFactory,
    ImageFactory,
    InferenceJobFactory,
    ModelDeploymentFactory,
    PatientFactory,
    PredictionFactory,
    assistive,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def case(radiologist) -> Case:
    """A case of department A with two images: one normal, one pneumonia (the leading finding)."""
    case = CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))
    PredictionFactory(
        job__image__case=case,
        probabilities={"normal": 0.9, "pneumonia": 0.05, "covid": 0.03, "tuberculosis": 0.02},
        top_label="normal",
        top_probability=0.9,
    )
    PredictionFactory(job__image__case=case)  # pneumonia 0.7
    return case


def sign(client, case, **data):
    payload = {
        "decision": "agree",
        "final_label": "",
        "other_finding": "",
        "impression": "Right lower lobe consolidation.",
    }
    payload.update(data)
    return client.post(reverse("report_sign", args=[case.pk]), payload)


def test_case_page_shows_the_ai_finding_and_the_sign_form(rad_client, case):
    response = rad_client.get(reverse("case_detail", args=[case.pk]))
    assertContains(response, "Review and sign")
    assertContains(response, 'class="ai-finding">AI finding: <strong>Pneumonia</strong> 70.0 %')
    assertContains(response, f'action="{reverse("report_sign", args=[case.pk])}"')
    for label in ("normal", "pneumonia", "covid", "tuberculosis", "other"):
        assertContains(response, f'<option value="{label}">')


def test_agree_signs_and_copies_the_ai_result(rad_client, radiologist, case):
    response = sign(rad_client, case)
    assert response.status_code == 302
    report = Report.objects.get(case=case)
    pneumonia_job = InferenceJob.objects.get(prediction__top_label="pneumonia")
    assert (report.final_label, report.agrees_with_ai, report.signed_by) == ("pneumonia", True, radiologist)
    assert (report.ai_job, report.ai_label, report.ai_probability) == (pneumonia_job, "pneumonia", 0.7)
    assert (report.ai_model_name, report.ai_model_version) == ("test-xray", "1.0.0")
    assert sorted(result["label"] for result in report.ai_results) == ["normal", "pneumonia"]
    assert all(result["probabilities"] for result in report.ai_results)
    page = rad_client.get(reverse("case_detail", args=[case.pk]))
    assertContains(page, "Report signed. It is locked now")
    assertContains(page, "Signed report")
    assertContains(page, "Right lower lobe consolidation.")
    assertContains(page, f'href="{reverse("report_pdf", args=[case.pk])}"')


def test_override_keeps_both_results(rad_client, case):
    assert sign(rad_client, case, decision="override", final_label="tuberculosis").status_code == 302
    report = Report.objects.get(case=case)
    assert (report.ai_label, report.final_label, report.agrees_with_ai) == ("pneumonia", "tuberculosis", False)
    assert report.disagrees_with_ai
    page = rad_client.get(reverse("case_detail", args=[case.pk]))
    assertContains(page, "overrides AI")


def test_other_finding_with_text(rad_client, case):
    response = sign(rad_client, case, decision="override", final_label="other", other_finding="Rib fracture")
    assert response.status_code == 302
    report = Report.objects.get(case=case)
    assert (report.final_label, report.other_finding) == ("other", "Rib fracture")


def test_the_ai_result_in_the_report_survives_a_rerun(rad_client, case):
    sign(rad_client, case)
    image = InferenceJob.objects.get(prediction__top_label="pneumonia").image
    # A newer result, of a version promoted since (issue 12: a model's image has one result each)
    PredictionFactory(job__image=image, job__model_version="2.0.0", top_label="covid", top_probability=0.99)
    assistive(ModelDeploymentFactory(department=case.patient.department, model_name="test-xray", model_version="2.0.0"))
    report = Report.objects.get(case=case)
    assert (report.ai_label, report.ai_probability) == ("pneumonia", 0.7)


def test_department_admin_may_sign(client, department_admin, case):
    client.force_login(department_admin)
    assert sign(client, case).status_code == 302
    assert Report.objects.get(case=case).signed_by == department_admin


def test_site_admin_without_department_cannot_sign(client, case):
    admin = User.objects.create_superuser("site", "site@hospital.example", "pw-not-used-123")
    client.force_login(admin)
    assert sign(client, case).status_code == 404
    with pytest.raises(Case.DoesNotExist):
        services.report_sign(case=case, signed_by=admin, agrees_with_ai=True, impression="x")
    assert not Report.objects.exists()


# Refusals: a message, a 4xx and nothing written ------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"impression": "   "}, "Write an impression before signing."),
        ({"decision": "override", "final_label": "other", "other_finding": " "}, "Describe the other finding."),
        ({"decision": "override", "final_label": "fracture"}, "&#x27;fracture&#x27; is not a class of this case"),
        ({"decision": "override", "final_label": ""}, "Choose the finding, or"),
        ({"decision": ""}, "Choose whether you agree with the AI finding or override it."),
        (
            {"decision": "agree", "final_label": "covid"},
            "You agreed with the AI finding (Pneumonia) but chose COVID-19",
        ),
    ],
)
def test_bad_sign_off_is_400_with_message(rad_client, case, data, message):
    response = sign(rad_client, case, **data)
    assert response.status_code == 400
    assertContains(response, message, status_code=400)
    assertContains(response, "The report was not signed", status_code=400)
    assert not Report.objects.exists()


def test_agreeing_without_an_ai_result_is_refused(rad_client, radiologist):
    case = CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))
    InferenceJobFactory(image__case=case, status=InferenceJob.Status.FAILED, error_message="no model")
    response = sign(rad_client, case)
    assertContains(response, "There is no AI result to agree with", status_code=400)
    assert not Report.objects.exists()
    # Overriding is how such a case is signed.
    assert sign(rad_client, case, decision="override", final_label="normal").status_code == 302
    report = Report.objects.get(case=case)
    assert (report.ai_job, report.ai_label, report.agrees_with_ai) == (None, "", False)


def test_signing_twice_is_409_and_leaves_the_report_as_signed(rad_client, case):
    sign(rad_client, case)
    response = sign(rad_client, case, decision="override", final_label="covid", impression="Changed my mind")
    assert response.status_code == 409
    assertContains(response, "This case is already signed", status_code=409)
    report = Report.objects.get(case=case)
    assert (report.final_label, report.impression) == ("pneumonia", "Right lower lobe consolidation.")


def test_a_signed_report_cannot_be_edited_or_deleted(rad_client, case):
    sign(rad_client, case)
    report = Report.objects.get(case=case)
    report.impression = "rewritten"
    with pytest.raises(LockedRecordError):
        report.save()
    with pytest.raises(LockedRecordError):
        Report.objects.filter(pk=report.pk).update(impression="rewritten")
    with pytest.raises(LockedRecordError):
        report.delete()
    assert Report.objects.get(pk=report.pk).impression == "Right lower lobe consolidation."


def test_signing_another_departments_case_is_404(client, outsider, case):
    client.force_login(outsider)
    assert sign(client, case).status_code == 404
    with pytest.raises(Case.DoesNotExist):
        services.report_sign(case=case, signed_by=outsider, agrees_with_ai=True, impression="x")
    assert not Report.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_people_signing_at_once_make_one_report(radiologist, department_admin, case):
    """Both wait at a barrier and sign together: the row lock lets one through, the other is refused."""
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt(user):
        try:
            barrier.wait()
            services.report_sign(case=case, signed_by=user, agrees_with_ai=True, impression=f"by {user.username}")
            outcomes.append("signed")
        except ReviewConflict as exc:
            outcomes.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(user,)) for user in (radiologist, department_admin)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["already_signed", "signed"]
    assert Report.objects.filter(case=case).count() == 1


# Addenda -------------------------------------------------------------------------------------


def test_addendum_is_shown_under_the_report_with_author_and_time(rad_client, radiologist, case):
    sign(rad_client, case)
    response = rad_client.post(reverse("report_addendum", args=[case.pk]), {"text": "Compared with 2025 film."})
    assert response.status_code == 302
    addendum = Addendum.objects.get()
    assert (addendum.author, addendum.report.case) == (radiologist, case)
    page = rad_client.get(reverse("case_detail", args=[case.pk]))
    assertContains(page, "Compared with 2025 film.")
    assertContains(page, f"{addendum.created_at:%Y-%m-%d %H:%M} · {radiologist.username}")
    # The report itself is unchanged.
    assert Report.objects.get(case=case).impression == "Right lower lobe consolidation."


def test_addendum_on_an_unsigned_case_is_409(rad_client, case):
    response = rad_client.post(reverse("report_addendum", args=[case.pk]), {"text": "Too early."})
    assert response.status_code == 409
    assertContains(response, "This case has no signed report yet", status_code=409)
    assert not Addendum.objects.exists()


def test_empty_addendum_is_400(rad_client, case):
    sign(rad_client, case)
    response = rad_client.post(reverse("report_addendum", args=[case.pk]), {"text": "  "})
    assertContains(response, "Write the addendum", status_code=400)
    assert not Addendum.objects.exists()


def test_addendum_on_another_departments_case_is_404(rad_client, client, outsider, case):
    sign(rad_client, case)
    client.force_login(outsider)
    assert client.post(reverse("report_addendum", args=[case.pk]), {"text": "x"}).status_code == 404
    with pytest.raises(Case.DoesNotExist):
        services.addendum_add(case=case, author=outsider, text="x")
    assert not Addendum.objects.exists()


def test_sign_off_pages_refuse_get_and_anonymous(rad_client, case):
    assert rad_client.get(reverse("report_sign", args=[case.pk])).status_code == 405
    response = Client().post(reverse("report_sign", args=[case.pk]), {"decision": "agree", "impression": "x"})
    assert response.status_code == 302
    assert "login" in response["Location"]
    assert not Report.objects.exists()


def test_case_page_without_images_still_offers_override(rad_client, radiologist):
    case = CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))
    ImageFactory(case=case)
    response = rad_client.get(reverse("case_detail", args=[case.pk]))
    assertContains(response, "No AI result to agree with")


def test_the_form_carries_the_ai_result_shown(rad_client, case):
    job = InferenceJob.objects.get(prediction__top_label="pneumonia")
    response = rad_client.get(reverse("case_detail", args=[case.pk]))
    assertContains(response, f'<input type="hidden" name="shown_ai_job" value="{job.pk}"', html=False)
    assert sign(rad_client, case, shown_ai_job=job.pk).status_code == 302
    assert Report.objects.get().ai_job == job


@pytest.mark.parametrize("shown", ["job", "none"])
def test_signing_after_the_ai_result_changed_is_409(rad_client, case, shown):
    """The page showed one AI result (or none); a job finished or re-ran before the click."""
    job = InferenceJob.objects.get(prediction__top_label="pneumonia")
    # The result of a version promoted meanwhile (issue 12: one result per model per image)
    PredictionFactory(job__image=job.image, job__model_version="2.0.0", top_label="covid", top_probability=0.9)
    assistive(ModelDeploymentFactory(department=case.patient.department, model_name="test-xray", model_version="2.0.0"))
    response = sign(rad_client, case, shown_ai_job=job.pk if shown == "job" else 0)
    assertContains(
        response, "The AI result changed since you opened this case (it is now: COVID-19 90%)", status_code=409
    )
    assert not Report.objects.exists()
