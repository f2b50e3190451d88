"""/api/v1/cases/<id>/report/, .../report/addenda/, .../report.pdf: sign, amend, download, refusals."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from diagnosis.models import Case, InferenceJob
from reviews.models import Addendum, Report
from tests.factories import (
    CaseFactory,
    InferenceJobFactory,
    ModelDeploymentFactory,
    PatientFactory,
    PredictionFactory,
    assistive,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def case(radiologist) -> Case:
    case = CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))
    PredictionFactory(job__image__case=case)  # pneumonia 0.7
    return case


def url(case: Case, suffix: str = "report/") -> str:
    return f"/api/v1/cases/{case.pk}/{suffix}"


def sign(api, case, **data):
    payload = {"agrees_with_ai": True, "impression": "Consolidation right base."}
    payload.update(data)
    return api.post(url(case), payload, format="json")


def error(response, status: int) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["status"] == status
    return body["error"]


def test_sign_then_read_the_report(api, radiologist, case):
    response = sign(api, case)
    assert response.status_code == 201, response.content
    body = response.json()
    assert response["Location"] == body["url"] == f"http://testserver{url(case)}"
    assert body["pdf_url"] == f"http://testserver{url(case, 'report.pdf')}"
    assert (body["final_label"], body["agrees_with_ai"], body["disagrees_with_ai"]) == ("pneumonia", True, False)
    assert (body["ai_label"], body["ai_probability"], body["ai_model_version"]) == ("pneumonia", 0.7, "1.0.0")
    assert body["ai_job"] == InferenceJob.objects.get().pk
    assert body["signed_by"] == radiologist.username
    assert body["addenda"] == []
    assert api.get(url(case)).json() == body
    # The case shows the report in brief, in the detail and the list.
    summary = api.get(f"/api/v1/cases/{case.pk}/").json()["report"]
    assert (summary["final_label"], summary["signed_by"], summary["url"]) == ("pneumonia", "rad_a", body["url"])
    assert api.get("/api/v1/cases/").json()["results"][0]["report"] == summary


def test_override_with_other_finding(api, case):
    response = sign(api, case, agrees_with_ai=False, final_label="other", other_finding="Pleural effusion")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["final_label"], body["other_finding"], body["disagrees_with_ai"]) == (
        "other",
        "Pleural effusion",
        True,
    )


def test_unsigned_case_report_is_404_not_signed(api, case):
    assert error(api.get(url(case)), 404)["code"] == "not_signed"
    assert api.get(f"/api/v1/cases/{case.pk}/").json()["report"] is None


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"impression": " "}, "impression", "Write an impression before signing."),
        ({"agrees_with_ai": False, "final_label": "other"}, "other_finding", "Describe the other finding."),
        ({"agrees_with_ai": False, "final_label": "fracture"}, "final_label", "'fracture' is not a class"),
        ({"agrees_with_ai": "maybe"}, "agrees_with_ai", "Must be a valid boolean."),
        ({"agrees_with_ai": False, "finall_label": "covid"}, "finall_label", "Unknown field; this endpoint accepts"),
    ],
)
def test_bad_sign_off_is_400_in_the_error_format(api, case, data, field, message):
    body = error(sign(api, case, **data), 400)
    assert body["fields"][field][0].startswith(message)
    assert not Report.objects.exists()


def test_agreeing_without_ai_result_is_400(api, radiologist):
    case = CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))
    InferenceJobFactory(image__case=case, status=InferenceJob.Status.PENDING)
    body = error(sign(api, case), 400)
    assert body["fields"]["agrees_with_ai"][0].startswith("There is no AI result to agree with")
    assert not Report.objects.exists()


def test_signing_twice_is_409(api, case):
    sign(api, case)
    body = error(sign(api, case, agrees_with_ai=False, final_label="covid"), 409)
    assert body["code"] == "already_signed"
    assert "already signed" in body["message"]
    assert Report.objects.get().final_label == "pneumonia"


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_changing_a_signed_report_is_409_locked(api, case, method):
    sign(api, case)
    body = error(getattr(api, method)(url(case), {"impression": "rewritten"}, format="json"), 409)
    assert body["code"] == "report_locked"
    assert Report.objects.get().impression == "Consolidation right base."


def test_put_before_signing_is_405(api, case):
    assert error(api.put(url(case), {}, format="json"), 405)["code"] == "method_not_allowed"


def test_addenda(api, radiologist, case):
    sign(api, case)
    response = api.post(url(case, "report/addenda/"), {"text": "Discussed with the ward."}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["author"] == radiologist.username
    assert [a["text"] for a in api.get(url(case)).json()["addenda"]] == ["Discussed with the ward."]


def test_addendum_before_signing_is_409(api, case):
    body = error(api.post(url(case, "report/addenda/"), {"text": "early"}, format="json"), 409)
    assert body["code"] == "not_signed"
    assert not Addendum.objects.exists()


def test_empty_addendum_is_400(api, case):
    sign(api, case)
    body = error(api.post(url(case, "report/addenda/"), {"text": ""}, format="json"), 400)
    assert body["fields"]["text"] == ["Write the addendum's text."]
    assert not Addendum.objects.exists()


def test_pdf(api, case):
    body = error(api.get(url(case, "report.pdf")), 409)
    assert body["code"] == "not_signed"
    sign(api, case)
    response = api.get(url(case, "report.pdf"), HTTP_ACCEPT="application/pdf")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")


def test_another_department_gets_404_everywhere(api, outsider_api, case):
    for response in (
        outsider_api.get(url(case)),
        sign(outsider_api, case),
        outsider_api.post(url(case, "report/addenda/"), {"text": "x"}, format="json"),
        outsider_api.get(url(case, "report.pdf")),
    ):
        assert error(response, 404)["code"] == "not_found"
    assert not Report.objects.exists()
    sign(api, case)
    for response in (
        outsider_api.get(url(case)),
        outsider_api.put(url(case), {}, format="json"),
        outsider_api.delete(url(case)),
        outsider_api.post(url(case, "report/addenda/"), {"text": "x"}, format="json"),
        outsider_api.get(url(case, "report.pdf")),
    ):
        assert error(response, 404)["code"] == "not_found"
    assert not Addendum.objects.exists()


def test_anonymous_is_401(case):
    assert error(APIClient().post(url(case), {"agrees_with_ai": True, "impression": "x"}, format="json"), 401)
    assert not Report.objects.exists()


def test_signing_checks_the_ai_result_reviewed(api, case):
    job = InferenceJob.objects.get()
    # A newer result after review: of a version promoted meanwhile (issue 12: one result per model per image)
    PredictionFactory(job__image=job.image, job__model_version="2.0.0", top_label="covid", top_probability=0.9)
    assistive(ModelDeploymentFactory(department=case.patient.department, model_name="test-xray", model_version="2.0.0"))
    body = error(sign(api, case, shown_ai_job_id=job.pk), 409)
    assert body["code"] == "ai_result_changed"
    assert not Report.objects.exists()
    newer = InferenceJob.objects.latest("id")
    assert sign(api, case, shown_ai_job_id=newer.pk).json()["ai_label"] == "covid"
