"""The worklist page: the department's cases with their latest job, filters, search, pages."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from pytest_django.asserts import assertContains, assertNotContains

from tests.factories import CaseFactory, InferenceJobFactory, PatientFactory, PredictionFactory

pytestmark = pytest.mark.django_db


def case_ids(response) -> list[int]:
    return [int(pk) for pk in re.findall(r'data-case-id="(\d+)"', response.content.decode())]


@pytest.fixture
def make_case(radiologist):
    def make(*, status: str | None = None, modality: str = "xray", mrn: str | None = None, **kwargs):
        patient_kwargs = {"department": radiologist.department, "created_by": radiologist}
        if mrn:
            patient_kwargs["mrn"] = mrn
        case = CaseFactory(patient=PatientFactory(**patient_kwargs), modality=modality, **kwargs)
        if status == "succeeded":
            PredictionFactory(job__image__case=case, top_label="covid", top_probability=0.82)
        elif status:
            InferenceJobFactory(image__case=case, status=status, error_message="boom" if status == "failed" else "")
        return case

    return make


def test_worklist_lists_cases_newest_first_with_latest_result(rad_client, make_case):
    old = make_case(status="failed", created_at=timezone.now() - timedelta(days=2))
    new = make_case(status="succeeded")
    response = rad_client.get(reverse("worklist"))
    assert response.status_code == 200
    assert case_ids(response) == [new.pk, old.pk]
    assertContains(response, '<span class="finding">COVID-19</span>', html=True)
    assertContains(response, "82.0 %")
    assertContains(response, '<span class="badge badge-failed">failed</span>', html=True)
    assertContains(response, new.patient.mrn)
    assertContains(response, f'href="{reverse("case_detail", args=[new.pk])}"')
    assertContains(response, f'href="{reverse("patient_detail", args=[new.patient_id])}"')


def test_worklist_shows_top_bar(rad_client, radiologist):
    response = rad_client.get(reverse("worklist"))
    assertContains(response, "Radiology A")
    assertContains(response, radiologist.username)
    for name in ("worklist", "patient_list", "case_create", "api-docs"):
        assertContains(response, f'href="{reverse(name)}"')
    assertContains(response, f'<form method="post" action="{reverse("logout")}" class="inline">')
    assertNotContains(response, reverse("user_list"))  # not an admin


def test_worklist_shows_users_link_to_admins(client, department_admin):
    client.force_login(department_admin)
    assertContains(client.get(reverse("worklist")), f'href="{reverse("user_list")}"')


@pytest.mark.parametrize("status", ["pending", "running", "succeeded", "failed", "none"])
def test_worklist_status_filter(rad_client, make_case, status):
    cases = {s: make_case(status=None if s == "none" else s) for s in ["pending", "running", "succeeded", "failed"]}
    cases["none"] = make_case()
    response = rad_client.get(reverse("worklist"), {"status": status})
    assert case_ids(response) == [cases[status].pk]


def test_worklist_filters_on_latest_job_only(rad_client, make_case):
    case = make_case(status="failed")
    PredictionFactory(job__image=case.images.get())  # re-run that succeeded
    assert case_ids(rad_client.get(reverse("worklist"), {"status": "succeeded"})) == [case.pk]
    assert case_ids(rad_client.get(reverse("worklist"), {"status": "failed"})) == []


def test_worklist_modality_filter(rad_client, make_case):
    xray, ct = make_case(modality="xray"), make_case(modality="ct")
    assert case_ids(rad_client.get(reverse("worklist"), {"modality": "ct"})) == [ct.pk]
    assert case_ids(rad_client.get(reverse("worklist"), {"modality": "xray"})) == [xray.pk]


def test_worklist_date_range(rad_client, make_case):
    def at(day: int):
        return datetime(2026, 3, day, 12, 0, tzinfo=UTC)

    first, second, third = (make_case(created_at=at(day)) for day in (1, 10, 20))
    response = rad_client.get(reverse("worklist"), {"date_from": "2026-03-05", "date_to": "2026-03-20"})
    assert case_ids(response) == [third.pk, second.pk]
    assert case_ids(rad_client.get(reverse("worklist"), {"date_to": "2026-03-01"})) == [first.pk]


def test_worklist_search_by_record_number(rad_client, make_case):
    wanted = make_case(mrn="XR-4711")
    make_case(mrn="XR-0815")
    response = rad_client.get(reverse("worklist"), {"q": "4711"})
    assert case_ids(response) == [wanted.pk]
    assertContains(response, "1 case matches the filters.")


def test_worklist_bad_filter_values_are_400_with_message(rad_client, make_case):
    case = make_case()
    response = rad_client.get(reverse("worklist"), {"date_from": "yesterday", "status": "exploded"})
    assert response.status_code == 400
    assertContains(response, "Enter a valid date.", status_code=400)
    assertContains(response, "Select a valid choice.", status_code=400)
    assert case_ids(response) == [case.pk]  # the bad filters are ignored, not applied


def test_worklist_reversed_date_range_is_400(rad_client):
    response = rad_client.get(reverse("worklist"), {"date_from": "2026-03-10", "date_to": "2026-03-01"})
    assert response.status_code == 400
    assertContains(response, "The end date is before the start date.", status_code=400)


def test_worklist_pagination_keeps_filters(rad_client, make_case):
    cases = [make_case(modality="ct") for _ in range(27)]
    make_case(modality="xray")
    first = rad_client.get(reverse("worklist"), {"modality": "ct"})
    assert len(case_ids(first)) == 25
    assertContains(first, "Page 1 of 2")
    assertContains(first, 'href="?modality=ct&amp;page=2"')
    second = rad_client.get(reverse("worklist"), {"modality": "ct", "page": 2})
    assert case_ids(second) == [c.pk for c in cases[:2]][::-1]
    assert case_ids(rad_client.get(reverse("worklist"), {"modality": "ct", "page": "nonsense"})) == case_ids(first)


def test_empty_worklist(rad_client):
    assertContains(rad_client.get(reverse("worklist")), "No cases yet.")


def test_worklist_requires_login(client):
    response = client.get(reverse("worklist"))
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next=/"
