"""Issue 11: storing a worker's result costs little beside the result itself.

Other apps listen for finished jobs (webhooks: job.finished; dicomnet: results to destination
nodes). A department with no active subscription and no destination node pays one check query
each, at commit, and nothing more. The reading order is refreshed in two statements, with an
UPDATE only when the order changed.
"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from diagnosis import services as diagnosis_services
from diagnosis.models import Case
from dicomnet.models import Delivery as DicomDelivery
from dicomnet.models import DicomNode
from tests.factories import (
    CaseFactory,
    DepartmentFactory,
    ModelDeploymentFactory,
    PatientFactory,
    PredictionFactory,
    png_bytes,
)
from tests.test_dicomnet_delivery import dicom_prediction
from webhooks.models import Delivery as WebhookDelivery
from webhooks.models import Event, Subscription

pytestmark = pytest.mark.django_db


def _subscription(department, events, *, by, active: bool = True) -> Subscription:
    return Subscription.objects.create(
        department=department,
        url="https://ehr.example.org/hook",
        events=events,
        secret="whsec_x",
        is_active=active,
        created_by=by,
    )


@pytest.fixture
def others_subscribed(department, radiologist):
    """Subscribers and destinations that must not count for `department`'s results: another
    department's, and this department's inactive, other-event, disabled and incoming ones."""
    other = DepartmentFactory(name="Radiology B")
    _subscription(other, [Event.JOB_FINISHED], by=radiologist)
    DicomNode.objects.create(department=other, name="PACS B", ae_title="PACSB", host="127.0.0.1", port=104)
    _subscription(department, [Event.JOB_FINISHED], by=radiologist, active=False)
    _subscription(department, [Event.REPORT_SIGNED], by=radiologist)
    DicomNode.objects.create(department=department, name="Off", ae_title="OFF", host="h", port=1, enabled=False)
    DicomNode.objects.create(department=department, name="Modality", ae_title="CR1", direction="incoming")


def _commit_hooks_sql(django_capture_on_commit_callbacks, make) -> list[str]:
    """SQL run by the on-commit listeners of whatever `make` saves."""
    with django_capture_on_commit_callbacks() as callbacks:
        made = make()
    assert callbacks, "a finished job registers its listeners"
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        for callback in callbacks:
            callback()
    return made, [query["sql"] for query in queries]


def test_a_result_nobody_subscribed_to_costs_one_check_per_app(
    department, radiologist, others_subscribed, django_capture_on_commit_callbacks
):
    case = CaseFactory(patient=PatientFactory(department=department, created_by=radiologist), created_by=radiologist)
    _, sql = _commit_hooks_sql(django_capture_on_commit_callbacks, lambda: PredictionFactory(job__image__case=case))
    assert len(sql) == 2, sql
    assert sum('FROM "webhooks_subscription"' in statement for statement in sql) == 1
    assert sum('FROM "dicomnet_dicomnode"' in statement for statement in sql) == 1
    assert not WebhookDelivery.objects.exists()
    assert not DicomDelivery.objects.exists()


def test_a_subscribed_department_still_gets_its_deliveries(
    department, radiologist, others_subscribed, django_capture_on_commit_callbacks
):
    """The check lets through what it should: the same result, now with a subscriber and a
    destination in its department, makes a job.finished delivery and an SR and a capture."""
    _subscription(department, [Event.JOB_FINISHED], by=radiologist)
    DicomNode.objects.create(department=department, name="PACS", ae_title="PACS1", host="127.0.0.1", port=104)
    prediction, sql = _commit_hooks_sql(
        django_capture_on_commit_callbacks, lambda: dicom_prediction(department, radiologist)
    )
    assert len(sql) > 2
    assert WebhookDelivery.objects.get().object_key == f"job:{prediction.job_id}"
    assert sorted(DicomDelivery.objects.values_list("kind", flat=True)) == sorted(
        [DicomDelivery.Kind.SR, DicomDelivery.Kind.SC]
    )


def test_the_reading_order_is_refreshed_in_two_statements_and_written_only_when_changed(department, radiologist):
    case = CaseFactory(patient=PatientFactory(department=department, created_by=radiologist), created_by=radiologist)
    prediction = PredictionFactory(job__image__case=case)
    case = Case.objects.get(pk=case.pk)
    assert (case.lead_label, case.lead_probability) == (prediction.top_label, prediction.top_probability)
    with CaptureQueriesContext(connection) as unchanged:
        case.refresh_reading_order()
    assert len(unchanged) == 2, [query["sql"] for query in unchanged]
    assert not any(query["sql"].startswith("UPDATE") for query in unchanged)
    # Changed behind its back (as a stale order would be): the refresh writes it back.
    Case.objects.filter(pk=case.pk).update(lead_label="", lead_probability=None)
    with CaptureQueriesContext(connection) as changed:
        case.refresh_reading_order()
    assert [query["sql"].split()[0] for query in changed] == ["SELECT", "SELECT", "UPDATE"]
    case = Case.objects.get(pk=case.pk)
    assert (case.lead_label, case.lead_probability) == (prediction.top_label, prediction.top_probability)


def test_an_upload_refreshes_its_cases_reading_order_once(radiologist):
    """The image and each model's job are saved in one upload: the case's reading order is
    computed once, at the end, whatever the number of models (it was once per save)."""
    ModelDeploymentFactory(department=radiologist.department)  # a silent candidate beside the assistive model
    case = CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))
    upload = SimpleUploadedFile("chest.png", png_bytes(256, 256))
    with CaptureQueriesContext(connection) as queries:
        jobs = diagnosis_services.images_upload(case=case, files=[upload], uploaded_by=radiologist)

    assert len(jobs) == 2
    sql = [query["sql"] for query in queries.captured_queries]
    assert sum(statement.startswith('UPDATE "diagnosis_case"') for statement in sql) == 1
    assert sum('FROM "diagnosis_inferencejob"' in statement for statement in sql) == 1  # the order's one read
    case.refresh_from_db()
    assert case.waiting_since is not None
