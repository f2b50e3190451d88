"""Department-scoped reads and the worklist annotations."""

from datetime import timedelta

import pytest
from django.utils import timezone

from diagnosis import selectors
from diagnosis.models import Case, InferenceJob
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
def cases(radiologist, outsider):
    mine = PatientFactory(department=radiologist.department, created_by=radiologist, mrn="A-100")
    theirs = PatientFactory(department=outsider.department, created_by=outsider, mrn="B-100")
    done = CaseFactory(patient=mine, created_by=radiologist)
    PredictionFactory(job__image__case=done, top_label="covid", top_probability=0.9)
    running = CaseFactory(patient=mine, created_by=radiologist, modality="ct")
    InferenceJobFactory(image__case=running, status=InferenceJob.Status.RUNNING)
    empty = CaseFactory(patient=mine, created_by=radiologist, created_at=timezone.now() - timedelta(days=3))
    other = CaseFactory(patient=theirs, created_by=outsider)
    return {"done": done, "running": running, "empty": empty, "other": other}


def test_every_list_is_scoped_to_the_department(cases, radiologist, outsider):
    assert set(selectors.case_list_for_user(user=radiologist)) == {cases["done"], cases["running"], cases["empty"]}
    assert list(selectors.case_list_for_user(user=outsider)) == [cases["other"]]
    assert {p.mrn for p in selectors.patient_list_for_user(user=radiologist)} == {"A-100"}
    assert selectors.image_list_for_user(user=outsider).count() == 0
    assert selectors.job_list_for_user(user=outsider).count() == 0
    assert selectors.prediction_list_for_user(user=outsider).count() == 0
    assert selectors.prediction_list_for_user(user=radiologist).count() == 1


def test_inactive_or_departmentless_users_see_nothing(cases, radiologist):
    radiologist.is_active = False
    assert selectors.case_list_for_user(user=radiologist).count() == 0
    siteadmin = UserFactory(department=None, is_superuser=True)
    assert selectors.case_list_for_user(user=siteadmin).count() == 0


def test_case_detail_of_another_department_does_not_exist(cases, outsider):
    with pytest.raises(Case.DoesNotExist):
        selectors.case_detail(user=outsider, case_id=cases["done"].pk)


def test_worklist_annotates_latest_job(cases, radiologist):
    rows = {c.pk: c for c in selectors.worklist(user=radiologist)}
    assert rows[cases["done"].pk].latest_status == "succeeded"
    assert rows[cases["done"].pk].latest_top_label == "covid"
    assert rows[cases["done"].pk].latest_top_probability == pytest.approx(0.9)
    assert rows[cases["running"].pk].latest_status == "running"
    assert rows[cases["empty"].pk].latest_status is None


def test_worklist_latest_job_wins(cases, radiologist):
    image = ImageFactory(case=cases["done"])
    InferenceJobFactory(image=image, status=InferenceJob.Status.FAILED)
    row = selectors.worklist(user=radiologist).get(pk=cases["done"].pk)
    assert row.latest_status == "failed"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"status": "succeeded"}, {"done"}),
        ({"status": "running"}, {"running"}),
        ({"status": "none"}, {"empty"}),
        ({"modality": "ct"}, {"running"}),
        ({"search": "a-10"}, {"done", "running", "empty"}),
        ({"search": "B-100"}, set()),
        ({"date_to": (timezone.now() - timedelta(days=2)).date()}, {"empty"}),
        ({"date_from": timezone.now().date()}, {"done", "running"}),
    ],
)
def test_worklist_filters(cases, radiologist, filters, expected):
    names = {name for name, case in cases.items() if case in set(selectors.worklist(user=radiologist, **filters))}
    assert names == expected
