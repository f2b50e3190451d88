"""The department dashboard: per model version, studies, AI findings, the gate's refusals and
agreement with signed reports, on data with known counts; scoped to the user's department."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from pytest_django.asserts import assertContains, assertNotContains

from audit import charts
from audit.dashboard import dashboard_for_department
from diagnosis.models import InferenceJob
from reviews.models import Report
from tests.factories import (
    CaseFactory,
    DepartmentAdminFactory,
    ImageFactory,
    InferenceJobFactory,
    PatientFactory,
    PredictionFactory,
)

pytestmark = pytest.mark.django_db
S = InferenceJob.Status


def new_case(user):
    return CaseFactory(patient=PatientFactory(department=user.department, created_by=user), created_by=user)


def predicted(user, label: str, *, version: str = "1.0.0", case=None):
    case = case or new_case(user)
    return PredictionFactory(
        job__image__case=case, job__model_name="test-xray", job__model_version=version, top_label=label,
        model_name="test-xray", model_version=version,
    )  # fmt: skip


def job(user, status: str, *, version: str = "1.0.0"):
    return InferenceJobFactory(image__case=new_case(user), status=status, model_name="test-xray", model_version=version)


def signed(user, *, ai: str, final: str, version: str = "1.0.0") -> Report:
    return Report.objects.create(
        case=new_case(user),
        ai_label=ai,
        ai_model_name="test-xray",
        ai_model_version=version,
        agrees_with_ai=ai == final,
        final_label=final,
        other_finding="rib fracture" if final == Report.OTHER else "",
        impression="Signed in a test.",
        signed_by=user,
    )


@pytest.fixture
def data(radiologist, outsider):
    """Version 1.0.0 in department A:
    - 4 predictions on 3 cases (one case has two images): pneumonia x2, normal x2
    - 1 rejected and 1 failed job (own cases), so 6 jobs on 5 cases and 6 images
    - 7 signed reports (radiologist, AI): (pneumonia, pneumonia) x2, (normal, pneumonia),
      (normal, normal), (covid, pneumonia), (other, normal), (tuberculosis, tuberculosis)
    Version 2.0.0 in department A: one normal prediction. Department B: lots of covid."""
    two_images = new_case(radiologist)
    predicted(radiologist, "pneumonia", case=two_images)
    predicted(radiologist, "normal", case=two_images)
    predicted(radiologist, "pneumonia")
    predicted(radiologist, "normal")
    job(radiologist, S.REJECTED)
    job(radiologist, S.FAILED)
    InferenceJobFactory(image=ImageFactory(case=new_case(radiologist)))  # pending, no model yet: not counted
    for ai, final in [
        ("pneumonia", "pneumonia"),
        ("pneumonia", "pneumonia"),
        ("pneumonia", "normal"),
        ("normal", "normal"),
        ("pneumonia", "covid"),
        ("normal", Report.OTHER),
        ("tuberculosis", "tuberculosis"),
    ]:
        signed(radiologist, ai=ai, final=final)
    predicted(radiologist, "normal", version="2.0.0")
    for _ in range(3):
        predicted(outsider, "covid")
        job(outsider, S.REJECTED)
        signed(outsider, ai="covid", final="normal")


def test_numbers_per_model_version(data, radiologist):
    v1, v2 = dashboard_for_department(department_id=radiologist.department_id)
    assert (v1.model_name, v1.model_version, v2.model_version) == ("test-xray", "1.0.0", "2.0.0")
    assert (v1.cases, v1.images) == (5, 6)
    assert (v1.succeeded, v1.rejected, v1.failed) == (4, 1, 1)
    assert v1.rejection_rate == pytest.approx(1 / 5)  # of the 5 images the gate judged
    assert v1.findings == {"pneumonia": 2, "normal": 2}

    assert v1.ai_labels == ["normal", "pneumonia", "covid", "tuberculosis"]
    assert v1.signed_labels == ["normal", "pneumonia", "covid", "tuberculosis", "other"]
    assert v1.matrix == [
        # AI: normal, pneumonia, covid, tuberculosis
        [1, 1, 0, 0],  # radiologist: normal
        [0, 2, 0, 0],  # pneumonia
        [0, 1, 0, 0],  # covid (the AI said pneumonia)
        [0, 0, 0, 1],  # tuberculosis
        [1, 0, 0, 0],  # other finding
    ]
    assert (v1.reports, v1.agreed) == (7, 4)
    assert v1.agreement == pytest.approx(4 / 7)
    sensitivity = {s.label: (s.detected, s.signed, s.value) for s in v1.sensitivities}
    assert sensitivity == {
        "normal": (1, 2, 0.5),
        "pneumonia": (2, 2, 1.0),
        "covid": (0, 1, 0.0),
        "tuberculosis": (1, 1, 1.0),
    }

    assert (v2.cases, v2.images, v2.succeeded, v2.rejected) == (1, 1, 1, 0)
    assert v2.findings == {"normal": 1}
    assert v2.reports == 0
    assert v2.agreement is None


def test_other_department_sees_only_its_own(data, outsider):
    (only,) = dashboard_for_department(department_id=outsider.department_id)
    assert (only.cases, only.succeeded, only.rejected) == (6, 3, 3)
    assert only.findings == {"covid": 3}
    assert only.ai_labels == ["normal", "covid"]
    assert only.matrix == [[0, 3], [0, 0]]  # the radiologists signed normal where the AI said covid
    sensitivity = {s.label: (s.detected, s.signed, s.value) for s in only.sensitivities}
    assert sensitivity == {"normal": (0, 3, 0.0), "covid": (0, 0, None)}


def page_text(response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))


@pytest.mark.parametrize("role", ["radiologist", "department_admin"])
def test_page_shows_numbers_and_plots(data, request, client, role):
    client.force_login(request.getfixturevalue(role))
    response = client.get(reverse("dashboard"))
    assert response.status_code == 200
    text = page_text(response)
    assert "5 cases, 6 images" in text
    assert "20.0 % (1 of 5 images judged)" in text
    assert "AI agreed in 57.1 % (4 of 7)" in text
    assert "Normal 2 1 50.0 %" in text  # sensitivity row: signed, AI agreed, sensitivity
    # 1.0.0: findings, outcomes, matrix, sensitivity; 2.0.0 (no reports yet): the first two.
    assert response.content.count(b'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img"') == 4 + 2
    assertContains(response, 'aria-label="Radiologist versus AI labels for test-xray 1.0.0"')
    assertNotContains(response, "COVID-19 3")


def test_another_departments_admin_sees_none_of_it(data, client, other_department):
    client.force_login(DepartmentAdminFactory(username="admin_b", department=other_department))
    text = page_text(client.get(reverse("dashboard")))
    assert "6 cases, 6 images" in text  # their own
    assert "2.0.0" not in text
    assert "Pneumonia" not in text


def test_empty_department(client, department_admin):
    client.force_login(department_admin)
    assertContains(client.get(reverse("dashboard")), "No image of this department has been classified yet.")


def test_site_admin_without_department_is_forbidden(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.org", "x-very-long-pw"))
    assert client.get(reverse("dashboard")).status_code == 403


def test_anonymous_is_sent_to_login(client):
    assert client.get(reverse("dashboard"))["Location"].startswith(reverse("login"))


def test_query_count_does_not_grow_with_data(radiologist):
    client = Client()
    client.force_login(radiologist)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse("dashboard")).status_code == 200
        return len(captured)

    predicted(radiologist, "normal")
    signed(radiologist, ai="normal", final="normal")
    few = queries()
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        for label in ("normal", "pneumonia", "covid"):
            predicted(radiologist, label, version=version)
            signed(radiologist, ai=label, final="normal", version=version)
        job(radiologist, S.REJECTED, version=version)
    assert queries() == few
    assert few <= 8  # session, user, department (top bar) + jobs, findings, reports + beat and worker heartbeats


def test_charts_escape_their_text():
    svg = charts.bar_chart([("<script>alert(1)</script>", 1.0, "1 & 2")], title='a "model" <b>')
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert "1 &amp; 2" in svg
    assert 'aria-label="a &quot;model&quot; &lt;b&gt;"' in svg
    matrix = charts.confusion_matrix(
        rows=["<i>"], columns=["<i>"], counts=[[3]], title="t", row_axis="<r>", column_axis="<c>"
    )
    for raw in ("<i>", "<r>", "<c>"):
        assert raw not in matrix
    assert ">3</text>" in matrix


def test_withdrawn_images_leave_the_numbers(data, radiologist):
    """A mistaken upload that was withdrawn is not part of what the model did in this department."""
    from django.utils import timezone

    from diagnosis.models import Prediction

    before = dashboard_for_department(department_id=radiologist.department_id)[0]
    department = radiologist.department
    withdrawn = Prediction.objects.filter(
        model_version="1.0.0", top_label="pneumonia", job__image__case__patient__department=department
    ).first()
    image = withdrawn.job.image
    image.withdrawn_at = timezone.now()
    image.save(update_fields=["withdrawn_at"])

    after = dashboard_for_department(department_id=radiologist.department_id)[0]
    assert after.images == before.images - 1
    assert after.succeeded == before.succeeded - 1
    assert after.findings == {**before.findings, "pneumonia": before.findings["pneumonia"] - 1}
