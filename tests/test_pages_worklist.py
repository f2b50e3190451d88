"""The worklist page: the department's cases with their latest job, filters, search, pages."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from pytest_django.asserts import assertContains, assertNotContains

from reviews.models import Report
from tests.factories import CaseFactory, ImageFactory, InferenceJobFactory, PatientFactory, PredictionFactory

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


def next_link(response, rel: str = "next") -> str | None:
    found = re.search(rf'<a rel="{rel}" href="([^"]+)"', response.content.decode())
    return html.unescape(found.group(1)) if found else None


def test_worklist_pagination_keeps_filters(rad_client, make_case):
    cases = [make_case(modality="ct") for _ in range(27)]
    make_case(modality="xray")
    first = rad_client.get(reverse("worklist"), {"modality": "ct"})
    assert len(case_ids(first)) == 25
    assertContains(first, "27 cases match the filters.")
    assert next_link(first, "prev") is None
    link = next_link(first)
    assert link.startswith("?modality=ct&cursor=")
    second = rad_client.get(reverse("worklist") + link)
    assert case_ids(second) == [c.pk for c in cases[:2]][::-1]
    assert next_link(second) is None
    back = rad_client.get(reverse("worklist") + next_link(second, "prev"))
    assert case_ids(back) == case_ids(first)
    # a damaged or stale cursor is the first page, as a bad page number always was
    assert case_ids(rad_client.get(reverse("worklist"), {"modality": "ct", "cursor": "nonsense"})) == case_ids(first)


def test_worklist_pages_show_every_case_once(rad_client, make_case):
    cases = [make_case(status=("succeeded", "failed", None, "pending")[n % 4]) for n in range(60)]
    seen, url = [], reverse("worklist")
    while url:
        response = rad_client.get(url)
        seen += case_ids(response)
        link = next_link(response)
        url = reverse("worklist") + link if link else None
    assert sorted(seen) == sorted(case.pk for case in cases)
    assert len(seen) == len(set(seen)) == 60


def test_empty_worklist(rad_client):
    assertContains(rad_client.get(reverse("worklist")), "No cases yet.")


def test_worklist_requires_login(client):
    response = client.get(reverse("worklist"))
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next=/"


def row(response, case) -> str:
    """The HTML of one case's row."""
    found = re.search(
        rf'<tr class="case-row[^"]*" data-case-id="{case.pk}">(.*?)</tr>', response.content.decode(), re.S
    )
    assert found, f"no row for case {case.pk}"
    return found.group(1)


def test_worklist_columns_a_reading_room_expects(rad_client, radiologist):
    born = timezone.localdate() - timedelta(days=67 * 365 + 30)
    patient = PatientFactory(department=radiologist.department, mrn="REC-2026-000123456", birth_date=born, sex="M")
    case = CaseFactory(patient=patient, indication="Fever and cough after surgery.")
    first = ImageFactory(case=case, uploaded_at=timezone.now() - timedelta(minutes=42, seconds=10))
    ImageFactory(case=case)
    withdrawn = ImageFactory(case=case)
    withdrawn.withdrawn_at = timezone.now()
    withdrawn.save()
    PredictionFactory(job__image=first, top_label="pneumonia", top_probability=0.91)
    cells = row(rad_client.get(reverse("worklist")), case)
    assert '<td class="mono nowrap mrn">REC-2026-000123456</td>' in cells
    assert "67 y / M" in cells
    assert "Fever and cough after surgery." in cells
    assert '<td class="num">2</td>' in cells  # the withdrawn image does not count
    assert '<span class="finding">Pneumonia</span>' in cells
    assert ">42 min</time>" in cells  # elapsed wait since the first upload, not a timestamp


def test_infant_age_in_months_and_unknown_sex(rad_client, radiologist):
    patient = PatientFactory(
        department=radiologist.department, birth_date=timezone.localdate() - timedelta(days=250), sex="U"
    )
    case = CaseFactory(patient=patient)
    assert "8 mo / —" in row(rad_client.get(reverse("worklist")), case)


def test_signed_case_shows_the_radiologists_finding_first(rad_client, radiologist, make_case):
    case = make_case(status="succeeded")  # AI: COVID-19 82 %
    Report.objects.create(
        case=case,
        ai_label="covid",
        ai_probability=0.82,
        agrees_with_ai=False,
        final_label="pneumonia",
        impression="Lobar pneumonia.",
        signed_by=radiologist,
        signed_at=timezone.now() - timedelta(hours=3, minutes=5),
    )
    cells = row(rad_client.get(reverse("worklist")), case)
    radiologist_finding = cells.index('<span class="finding signed-finding" title="Radiologist\'s finding">Pneumonia')
    ai_finding = cells.index("AI: COVID-19 82.0 %")
    assert radiologist_finding < ai_finding
    assert "3 h 5 min ago" in cells


def test_reading_filter_is_separate_from_the_job_status(rad_client, radiologist, make_case):
    unsigned = make_case(status="succeeded")
    signed = make_case(status="succeeded")
    Report.objects.create(
        case=signed, agrees_with_ai=True, final_label="covid", impression="Read.", signed_by=radiologist
    )
    failed = make_case(status="failed")
    get = rad_client.get
    assert set(case_ids(get(reverse("worklist"), {"reading": "unsigned"}))) == {unsigned.pk, failed.pk}
    assert case_ids(get(reverse("worklist"), {"reading": "signed"})) == [signed.pk]
    assert case_ids(get(reverse("worklist"), {"reading": "signed", "status": "succeeded"})) == [signed.pk]
    assert case_ids(get(reverse("worklist"), {"reading": "unsigned", "status": "succeeded"})) == [unsigned.pk]
    assert len(case_ids(get(reverse("worklist"), {"reading": ""}))) == 3
    assert get(reverse("worklist"), {"reading": "maybe"}).status_code == 400


def test_case_links_carry_the_worklist_filters(rad_client, make_case):
    cases = [make_case(modality="ct", mrn=f"CT-{n}") for n in range(27)]
    response = rad_client.get(reverse("worklist"), {"modality": "ct", "q": "CT-", "reading": "unsigned"})
    query = "?q=CT-&amp;reading=unsigned&amp;modality=ct"
    assertContains(response, f'href="{reverse("case_detail", args=[cases[-1].pk])}{query}"')
    second = rad_client.get(reverse("worklist") + next_link(response))
    # the cursor is a page position, not a filter: case links never carry it
    assertContains(second, f'href="{reverse("case_detail", args=[cases[0].pk])}{query}"')
    assert re.search(r'href="/cases/\d+/\?[^"]*cursor', second.content.decode()) is None


def test_whole_row_is_one_keyboard_reachable_link(rad_client, make_case):
    case = make_case()
    cells = row(rad_client.get(reverse("worklist")), case)
    # The row's one link to the case is a real <a> (Tab reaches it, Enter opens it), named for
    # screen readers; the stylesheet stretches it over the row (tests/test_worklist_browser.py clicks a cell).
    assert re.search(rf'<a class="row-link" href="/cases/{case.pk}/" aria-label="Open case {case.pk}, ', cells)
