"""Case.latest_job (issue 11): the case's latest job of a model assistive in its department, on a
current image, stored so the worklist's job column and job-status filter need no per-case subquery.
It must always equal what the subquery gave: checked here for each way the answer can change."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps

from diagnosis import services
from diagnosis.models import Case, InferenceJob, ModelDeployment
from tests.factories import (
    CaseFactory,
    ImageFactory,
    InferenceJobFactory,
    ModelDeploymentFactory,
    PatientFactory,
    PredictionFactory,
)

pytestmark = pytest.mark.django_db

fill_latest_jobs = importlib.import_module("diagnosis.migrations.0011_case_latest_job").fill_latest_jobs


def _latest(case: Case) -> int | None:
    return Case.objects.values_list("latest_job_id", flat=True).get(pk=case.pk)


def _case(radiologist) -> Case:
    return CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))


def test_latest_job_follows_new_jobs_silent_models_and_withdrawals(radiologist):
    ModelDeploymentFactory(department=radiologist.department, model_name="shadow", status="silent")
    case = _case(radiologist)
    assert _latest(case) is None
    first = ImageFactory(case=case)
    shown = PredictionFactory(job__image=first).job
    assert _latest(case) == shown.pk
    InferenceJobFactory(image=first, model_name="shadow")  # a silent model's later job: not shown
    assert _latest(case) == shown.pk
    second = ImageFactory(case=case)
    pending = InferenceJobFactory(image=second)
    assert _latest(case) == pending.pk
    services.image_withdraw(image=second, withdrawn_by=radiologist, reason="wrong patient")
    assert _latest(case) == shown.pk


def test_claiming_changes_the_status_shown_not_the_job(radiologist, api):
    case = _case(radiologist)
    job = InferenceJobFactory(image=ImageFactory(case=case))
    assert services.job_claim(job_id=job.pk, worker="test-host 1") is not None
    assert _latest(case) == job.pk
    rows = api.get("/api/v1/cases/?status=running").json()["results"]
    assert [row["id"] for row in rows] == [case.pk]
    assert api.get("/api/v1/cases/?status=pending").json()["results"] == []


def test_a_patient_moved_to_another_department_shows_what_that_department_validated(radiologist, other_department):
    """Unsigned cases move with their patient; the results shown are those of the new
    department's assistive models (here none for X-ray), and the reading order follows."""
    case = _case(radiologist)
    PredictionFactory(job__image=ImageFactory(case=case), top_label="covid", top_probability=0.9)
    case.refresh_from_db()
    assert (case.latest_job_id is not None, case.lead_label) == (True, "covid")
    ModelDeployment.objects.filter(department=other_department, modality="xray").update(status="silent")
    patient = case.patient
    patient.department = other_department
    patient.save()
    case.refresh_from_db()
    assert (case.latest_job_id, case.lead_label, case.lead_probability) == (None, "", None)


def test_the_migration_fills_what_the_refresh_stores(radiologist, outsider):
    ModelDeploymentFactory(department=radiologist.department, model_name="shadow", status="silent")
    with_result = _case(radiologist)
    image = ImageFactory(case=with_result)
    PredictionFactory(job__image=image)
    InferenceJobFactory(image=image, model_name="shadow")
    withdrawn = _case(radiologist)
    kept = InferenceJobFactory(image=ImageFactory(case=withdrawn))
    gone = ImageFactory(case=withdrawn)
    InferenceJobFactory(image=gone)
    services.image_withdraw(image=gone, withdrawn_by=radiologist, reason="duplicate")
    empty = _case(radiologist)
    other = _case(outsider)
    InferenceJobFactory(image=ImageFactory(case=other), status=InferenceJob.Status.FAILED)
    stored = dict(Case.objects.values_list("pk", "latest_job_id"))
    assert stored[withdrawn.pk] == kept.pk
    assert stored[empty.pk] is None
    assert stored[other.pk] is not None

    Case.objects.update(latest_job=None)
    fill_latest_jobs(apps, None)
    assert dict(Case.objects.values_list("pk", "latest_job_id")) == stored
