"""The worklist's reading order (urgency, maximum wait, signed last) and the disagreement list."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from pytest_django.asserts import assertContains, assertNotContains

from diagnosis.models import Case
from reviews.models import Report
from tests.factories import CaseFactory, ImageFactory, InferenceJobFactory, PatientFactory, PredictionFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[1]


def case_ids(response, attribute: str = "data-case-id") -> list[int]:
    return [int(pk) for pk in re.findall(rf'{attribute}="(\d+)"', response.content.decode())]


@pytest.fixture
def make_case(radiologist):
    """A department-A case; `finding` = (label, probability) of one image's prediction,
    `waited` = how long ago its image arrived; `signed` adds a report."""

    def make(*, finding=None, waited=timedelta(minutes=5), images: bool = True, signed=None, department=None):
        patient = PatientFactory(department=department or radiologist.department, created_by=radiologist)
        case = CaseFactory(patient=patient, created_by=radiologist)
        if images:
            image = ImageFactory(case=case, uploaded_at=timezone.now() - waited)
            if finding:
                label, probability = finding
                PredictionFactory(job__image=image, top_label=label, top_probability=probability)
        if signed:
            Report.objects.create(
                case=case,
                ai_label=finding[0] if finding else "",
                ai_probability=finding[1] if finding else None,
                agrees_with_ai=bool(finding) and signed == finding[0],
                final_label=signed,
                impression="Read.",
                signed_by=radiologist,
            )
        return case

    return make


def test_worklist_triage_order(rad_client, make_case):
    signed = make_case(finding=("covid", 0.99), signed="covid")
    normal = make_case(finding=("normal", 0.99))
    pneumonia = make_case(finding=("pneumonia", 0.6))
    covid = make_case(finding=("covid", 0.95))
    overdue = make_case(finding=("normal", 0.99), waited=timedelta(hours=5))
    failed = make_case(waited=timedelta(minutes=30))
    InferenceJobFactory(image=failed.images.get(), status="failed")
    empty = make_case(images=False)
    response = rad_client.get(reverse("worklist"))
    # Overdue first whatever its score; AI-positive by probability; the rest by wait (longest
    # first); cases without images; signed last.
    assert case_ids(response) == [overdue.pk, covid.pk, pneumonia.pk, failed.pk, normal.pk, empty.pk, signed.pk]
    assertContains(response, "overdue</span>", count=1)
    assertContains(response, "signed</span>", count=1)
    assertContains(response, 'class="wait"', count=5)  # the elapsed wait of each unsigned case with images


def test_max_wait_is_a_setting(rad_client, make_case, settings):
    covid = make_case(finding=("covid", 0.9))
    waited = make_case(finding=("normal", 0.9), waited=timedelta(minutes=90))
    assert case_ids(rad_client.get(reverse("worklist"))) == [covid.pk, waited.pk]
    settings.XNET_TRIAGE_MAX_WAIT_MINUTES = 60
    response = rad_client.get(reverse("worklist"))
    assert case_ids(response) == [waited.pk, covid.pk]
    assertContains(response, "any case waiting more than 60 minutes")


def test_several_overdue_cases_longest_wait_first(rad_client, make_case):
    recent = make_case(finding=("covid", 0.99), waited=timedelta(hours=5))
    oldest = make_case(finding=("normal", 0.99), waited=timedelta(hours=9))
    assert case_ids(rad_client.get(reverse("worklist"))) == [oldest.pk, recent.pk]


def test_urgency_uses_each_images_latest_result_and_the_most_urgent_image(rad_client, make_case):
    rerun = make_case(finding=("covid", 0.99))
    InferenceJobFactory(image=rerun.images.get(), status="pending")  # a newer job, no result yet
    two_images = make_case(finding=("normal", 0.99))
    PredictionFactory(job__image=ImageFactory(case=two_images), top_label="tuberculosis", top_probability=0.4)
    response = rad_client.get(reverse("worklist"))
    assert case_ids(response) == [two_images.pk, rerun.pk]
    # The finding shown is the one triage ranks by: the positive image, not the latest upload.
    assertContains(response, '<span class="finding">Tuberculosis</span>', html=True)
    assertNotContains(response, '<span class="finding">Normal</span>', html=True)


def test_filters_keep_the_triage_order(rad_client, make_case):
    low = make_case(finding=("pneumonia", 0.55))
    normal = make_case(finding=("normal", 0.9))
    high = make_case(finding=("pneumonia", 0.95))
    make_case(images=False)
    response = rad_client.get(reverse("worklist"), {"status": "succeeded", "q": "MRN", "modality": "xray"})
    assert case_ids(response) == [high.pk, low.pk, normal.pk]


def test_worklist_query_count_is_constant_with_signed_cases(rad_client, make_case):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert rad_client.get(reverse("worklist")).status_code == 200
        return len(captured)

    make_case(finding=("covid", 0.9), signed="covid")
    make_case(finding=("normal", 0.9))
    few = queries()
    for n in range(8):
        make_case(finding=("pneumonia", 0.5 + n / 20), signed="normal" if n % 2 else None)
        make_case(waited=timedelta(hours=n))
    assert queries() == few


def test_api_case_list_keeps_newest_first(api, make_case):
    covid = make_case(finding=("covid", 0.99))
    newest = make_case(finding=("normal", 0.9))
    assert [c["id"] for c in api.get("/api/v1/cases/").json()["results"]] == [newest.pk, covid.pk]


# Disagreements -------------------------------------------------------------------------------


def test_disagreement_list(rad_client, make_case, other_department):
    make_case(finding=("pneumonia", 0.8), signed="pneumonia")  # agrees
    make_case(signed="normal")  # no AI result: nothing to disagree with
    overridden = make_case(finding=("covid", 0.7), signed="normal")
    other = make_case(finding=("normal", 0.9), signed="other")
    make_case(finding=("covid", 0.7), signed="normal", department=other_department)
    response = rad_client.get(reverse("disagreements"))
    assert response.status_code == 200
    assert case_ids(response) == sorted([other.pk, overridden.pk], reverse=True)
    assertContains(response, "2 cases.")
    assertContains(response, f'href="{reverse("disagreements")}" aria-current="page"')


def test_disagreement_list_is_paginated(rad_client, make_case):
    cases = [make_case(finding=("covid", 0.7), signed="normal") for _ in range(26)]
    first = rad_client.get(reverse("disagreements"))
    second = rad_client.get(reverse("disagreements"), {"page": 2})
    assert len(case_ids(first)) == 25
    assert case_ids(second) == [cases[0].pk]
    assertContains(second, "Page 2 of 2")


def test_disagreement_list_of_another_department_is_empty(client, outsider, make_case):
    case = make_case(finding=("covid", 0.7), signed="normal")
    client.force_login(outsider)
    response = client.get(reverse("disagreements"))
    assert case_ids(response) == []
    assertNotContains(response, case.patient.mrn)
    assertContains(response, "No disagreements")


def test_outsider_gets_404_on_every_sign_off_page(client, outsider, make_case):
    case: Case = make_case(finding=("covid", 0.7), signed="normal")
    client.force_login(outsider)
    assert (
        client.post(reverse("report_sign", args=[case.pk]), {"decision": "agree", "impression": "x"}).status_code == 404
    )
    assert client.post(reverse("report_addendum", args=[case.pk]), {"text": "x"}).status_code == 404
    assert client.get(reverse("report_pdf", args=[case.pk])).status_code == 404
    assert client.get(reverse("case_detail", args=[case.pk])).status_code == 404


@pytest.mark.parametrize(
    ("value", "expected"), [(None, "240"), ("30", "30"), ("soon", "is not an integer"), ("0", "at least 1")]
)
def test_max_wait_comes_from_the_environment(tmp_path, value, expected):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DJANGO_SETTINGS_MODULE": "xnet_site.settings",
        "XNET_VAR_DIR": str(tmp_path / "var"),
    }
    if value is not None:
        env["XNET_TRIAGE_MAX_WAIT_MINUTES"] = value
    code = "from django.conf import settings; print(settings.XNET_TRIAGE_MAX_WAIT_MINUTES)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert expected in result.stdout + result.stderr
    assert (result.returncode == 0) == (value in (None, "30"))
