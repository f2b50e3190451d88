"""The department dashboard: per model version, studies, AI findings, the gate's refusals and
agreement with signed reports, on data with known counts; scoped to the user's department; the
date range, the weekly axis, every class, model statuses and drift alarms."""

# ruff: noqa: F811 - the fixtures imported from test_modelops_validation are requested by name

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from pytest_django.asserts import assertContains, assertNotContains

from audit import charts
from audit.dashboard import dashboard_for_department
from diagnosis.models import InferenceJob
from reviews.models import Report
from tests.factories import (
    CaseFactory,
    DepartmentAdminFactory,
    DepartmentFactory,
    ImageFactory,
    InferenceJobFactory,
    PatientFactory,
    PredictionFactory,
)
from tests.test_modelops_validation import NEW, admin, dept, model_folders, reader, signed_case  # noqa: F401

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
    InferenceJobFactory(image=ImageFactory(case=new_case(radiologist)), model_name="", model_version="")  # no model
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
    # 1.0.0: findings, outcomes, weekly, matrix, sensitivity; 2.0.0 (no reports yet): the first three.
    assert response.content.count(b'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img"') == 5 + 3
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
    assertContains(client.get(reverse("dashboard")), "No image of this department was classified in this date range.")


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
    # session, user, department (top bar) + jobs, findings, reports + the same per week + model
    # statuses + drift alarms + beat and worker heartbeats
    assert few <= 13


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


# Date range, weekly axis, every class, statuses and drift alarms (issue 12) -----------------------


def _uploaded(day: str):
    from datetime import datetime

    return timezone.make_aware(datetime.fromisoformat(f"{day}T10:00"))


@pytest.fixture
def weekly_data(dept):
    """cxr-new (installed, 4 classes) in the department: week 2026-W45 two normal, one refused;
    W46 nothing; W47 one pneumonia, signed pneumonia (agreed). One image in W50, out of range."""
    for _ in range(2):
        signed_case(dept, None, {NEW: ("normal", 0.9)}, uploaded_at=_uploaded("2026-11-03"))
    signed_case(dept, None, {NEW: "rejected"}, uploaded_at=_uploaded("2026-11-04"))
    case = signed_case(dept, None, {NEW: ("pneumonia", 0.8)}, uploaded_at=_uploaded("2026-11-18"))
    Report.objects.create(
        case=case, ai_label="pneumonia", ai_model_name=NEW[0], ai_model_version=NEW[1], agrees_with_ai=True,
        final_label="pneumonia", impression="Signed in a test.", signed_by=case.created_by,
        signed_at=_uploaded("2026-11-19"),
    )  # fmt: skip
    signed_case(dept, None, {NEW: ("covid", 0.8)}, uploaded_at=_uploaded("2026-12-08"))


def test_weekly_axis_every_week_and_every_class(weekly_data, dept):
    from datetime import date

    versions = dashboard_for_department(department_id=dept.pk, start=date(2026, 11, 2), end=date(2026, 11, 22))
    (v,) = versions  # cxr-old did no work here
    assert (v.model_name, v.status) == ("cxr-new", "silent")
    assert v.ai_labels == ["normal", "pneumonia", "covid", "tuberculosis"]  # all of model.json, covid unseen
    assert (v.images, v.succeeded, v.rejected) == (4, 3, 1)  # the December image is out of range
    assert [(w.label, w.images, w.refused, w.findings, w.reports, w.agreed) for w in v.weeks] == [
        ("2026-W45", 3, 1, {"normal": 2}, 0, 0),
        ("2026-W46", 0, 0, {}, 0, 0),
        ("2026-W47", 1, 0, {"pneumonia": 1}, 1, 1),
    ]
    assert [counts for _, counts in v.week_rows] == [[2, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]]


def test_dashboard_page_with_a_range(weekly_data, dept, admin, client):
    client.force_login(admin)
    response = client.get(reverse("dashboard"), {"start": "2026-11-02", "end": "2026-11-22"})
    assert response.status_code == 200
    text = page_text(response)
    assert "from 2026-11-02 to 2026-11-22" in text
    assert "2026-W45 11-02 3 1 2 0 0 0 0 —" in text
    assert "2026-W46 11-09 0 0 0 0 0 0 0 —" in text
    assert "2026-W47 11-16 1 0 0 1 0 0 1 100.0 %" in text
    assertContains(response, 'aria-label="Images per week classified or refused by cxr-new 2.0.0"')
    assertContains(response, reverse("modelops:validation", args=NEW))
    assert "silent" in text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"start": "2026-11-22", "end": "2026-11-02"}, "The start date is after the end date."),
        ({"start": "yesterday"}, "Enter a valid date."),
        ({"start": "2020-01-01", "end": "2026-11-02"}, "Choose at most 156 weeks."),
        ({"end": "9999-12-31"}, "Enter a day between 1900-01-01 and 2999-12-31."),
        ({"start": "0001-01-01", "end": "0001-01-02"}, "Enter a day between 1900-01-01 and 2999-12-31."),
    ],
)
def test_a_bad_range_is_a_400_with_its_message(query, message, dept, admin, client):
    client.force_login(admin)
    response = client.get(reverse("dashboard"), query)
    assert response.status_code == 400
    assert message in page_text(response)


def test_radiologists_do_not_see_a_version_never_assistive_here(weekly_data, dept, admin, reader):
    from datetime import date

    def names(user):
        return [v.model_name for v in dashboard_for_department(
            department_id=dept.pk, start=date(2026, 11, 2), end=date(2026, 11, 22),
            admin_view=user.is_department_admin,
        )]  # fmt: skip

    assert names(admin) == ["cxr-new"]
    assert names(reader) == []  # silent, never assistive: its results are hidden from radiologists
    from diagnosis.model_status import deployment_set_status
    from diagnosis.models import ModelDeployment

    deployment = ModelDeployment.objects.get(department=dept, model_name=NEW[0])
    deployment_set_status(deployment=deployment, status="assistive", changed_by=admin, reason="validated")
    deployment_set_status(deployment=deployment, status="silent", changed_by=admin, reason="drifted")
    assert names(reader) == ["cxr-new"]  # its results were shown while it was assistive


def test_drift_alarms_on_the_dashboard(dept, admin, reader, client):
    from datetime import date

    from modelops.models import DriftAlarm

    DriftAlarm.objects.create(
        department=dept, modality="xray", model_name=NEW[0], model_version=NEW[1], week_start=date(2026, 11, 16),
        checks=[
            {"statistic": "predicted:covid", "observed": 1.0, "n": 40, "low": 0.05, "high": 0.26, "out_of_band": True},
            {"statistic": "refusal_rate", "observed": 0.0, "n": 40, "low": 0.0, "high": 0.1, "out_of_band": False},
        ],
    )  # fmt: skip
    for user in (admin, reader):
        client.force_login(user)
        text = page_text(client.get(reverse("dashboard")))
        assert "Drift alarms" in text
        assert (
            "2026-W47 2026-11-16 – 2026-11-22 cxr-new 2.0.0 images predicted covid: 100.0% (n=40); band 5.0% to 26.0%"
            in text
        )
        assert "gate refusal rate" not in text  # in band: not listed
    other = DepartmentAdminFactory(username="admin_other", department=DepartmentFactory(name="Other", models=False))
    client.force_login(other)
    assert "No drift alarm" in page_text(client.get(reverse("dashboard")))
