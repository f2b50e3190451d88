"""The case page says the model is loading while a job is its workers' first since they started
(issue 13: the first classification after start waited with no hint)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from diagnosis.models import InferenceJob
from diagnosis.warmup import LOADING_NOTE
from health.models import Heartbeat
from health.services import heartbeat_record
from tests.factories import CaseFactory, ImageFactory, InferenceJobFactory, PatientFactory

pytestmark = pytest.mark.django_db
WORKER = "xray-worker@host"


@pytest.fixture
def case(radiologist):
    case = CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))
    InferenceJobFactory(image=ImageFactory(case=case))  # pending
    return case


def started_worker(*, ago: timedelta = timedelta(0), queues=("xray",)) -> Heartbeat:
    return heartbeat_record(kind=Heartbeat.Kind.WORKER, name=WORKER, queues=queues, started_at=timezone.now() - ago)


def finished_by_worker(case, *, when) -> InferenceJob:
    job = InferenceJobFactory(
        image=ImageFactory(case=CaseFactory(patient=case.patient)),
        status=InferenceJob.Status.SUCCEEDED,
        attempt=1,
        worker=f"{WORKER} 4242",  # as services.this_worker records it: hostname and pid
        started_at=when,
        finished_at=when,
    )
    return job


def shown(client, case) -> tuple[bool, bool]:
    """Whether the case page and the status JSON the page polls carry the note."""
    page = client.get(reverse("case_detail", args=[case.pk])).content.decode()
    status = client.get(reverse("case_status", args=[case.pk])).json()
    return LOADING_NOTE in page, any(LOADING_NOTE in image["html"] for image in status["images"])


def test_a_pending_job_of_freshly_started_workers_says_the_model_is_loading(rad_client, case):
    started_worker()
    assert shown(rad_client, case) == (True, True)


def test_once_the_worker_classified_something_the_note_goes(rad_client, case):
    started_worker(ago=timedelta(minutes=5))
    finished_by_worker(case, when=timezone.now() - timedelta(minutes=1))
    assert shown(rad_client, case) == (False, False)


def test_a_restarted_worker_loads_again(rad_client, case):
    finished_by_worker(case, when=timezone.now() - timedelta(minutes=10))  # before the restart
    started_worker(ago=timedelta(seconds=5))
    assert shown(rad_client, case) == (True, True)


def test_no_note_without_a_live_worker_of_the_queue(rad_client, case, settings):
    started_worker(queues=("ct",))  # another queue
    assert shown(rad_client, case) == (False, False)
    heartbeat = started_worker()
    Heartbeat.objects.filter(pk=heartbeat.pk).update(
        last_seen=timezone.now() - timedelta(seconds=settings.XNET_WORKER_LOST_AFTER + 1)
    )
    assert shown(rad_client, case) == (False, False)  # lost: the dashboard warns about that


def test_no_note_on_a_finished_job(rad_client, case):
    started_worker()
    case.images.get().jobs.update(status=InferenceJob.Status.FAILED, error_message="x", finished_at=timezone.now())
    assert shown(rad_client, case) == (False, False)
