"""Webhooks through the real path: a finished job (real Celery worker) and a real sign-off (API)
reach a test receiver on loopback, signed; a receiver that fails twice gets exactly one
successful delivery after the backoff the settings give.

The worker is a `celery worker` subprocess on the test database (transactional tests), with the
same webhook settings as this process, passed through its environment.
"""

from __future__ import annotations

import json
import time

import pytest

from diagnosis.models import Prediction
from tests.conftest import token_client
from tests.factories import CaseFactory, PatientFactory, PredictionFactory
from tests.test_webhooks_delivery import Receiver, subscribe
from tests.workers import WorkerPool, api_upload, case_for, finished_job, wait_for
from webhooks import security, services
from webhooks.models import Delivery, Event

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

JOB_TIMEOUT = 90  # as tests/test_integration_worker.py: a fresh child imports TensorFlow first
# From a committed event to the POST by a worker whose child is up: measured here at 0.03-0.6 s
# (load average 6-9 on 2 cores shared by 8 test sessions); 10 s leaves room for a busier machine.
PICKUP = 10


@pytest.fixture
def webhook_settings(settings):
    settings.XNET_WEBHOOK_ALLOW_LOOPBACK = True
    settings.XNET_WEBHOOK_RETRY_SECONDS = 1
    settings.XNET_WEBHOOK_TIMEOUT = 5
    settings.XNET_WEBHOOK_MAX_ATTEMPTS = 5
    return settings


def worker_env(settings) -> dict[str, str]:
    """The worker runs with this process's webhook settings."""
    names = ("XNET_WEBHOOK_RETRY_SECONDS", "XNET_WEBHOOK_TIMEOUT", "XNET_WEBHOOK_MAX_ATTEMPTS")
    return {"XNET_WEBHOOK_ALLOW_LOOPBACK": "true", **{name: str(getattr(settings, name)) for name in names}}


@pytest.fixture
def workers(tmp_path, installed_models):
    with WorkerPool(tmp_path / "workers", model_dir=installed_models) as pool:
        yield pool


def check_signed(request: dict, secret: str) -> dict:
    headers, body = request["headers"], request["body"]
    assert security.verify_signature(secret, headers["X-XNET-Timestamp"], body, headers["X-XNET-Signature"])
    assert not security.verify_signature("whsec_other", headers["X-XNET-Timestamp"], body, headers["X-XNET-Signature"])
    document = json.loads(body)
    assert document["id"] == headers["X-XNET-Delivery"]
    assert document["event"] == headers["X-XNET-Event"]
    return document


def test_a_finished_job_reaches_the_receiver(
    workers, webhook_settings, api, radiologist, department_admin, chest_xray_bytes
):
    with Receiver() as receiver:
        _, secret = subscribe(department_admin, receiver.url, events=[Event.JOB_FINISHED])
        worker = workers.start(env=worker_env(webhook_settings))
        body = api_upload(api, case_for(radiologist, "xray"), chest_xray_bytes)
        job = wait_for(lambda: finished_job(body["job"]["id"]), timeout=JOB_TIMEOUT, what="the job", log=worker.log)
        finished = time.time()
        wait_for(lambda: receiver.requests, timeout=PICKUP, what="the job.finished POST", log=worker.log)
        print(f"job.finished POST {receiver.requests[0]['at'] - finished:.2f} s after the job row was read finished")
    [request] = receiver.requests
    document = check_signed(request, secret)
    assert document["event"] == "job.finished"
    data = document["data"]
    prediction = Prediction.objects.get(job=job)
    assert (data["job"]["id"], data["job"]["status"]) == (job.pk, "succeeded")
    assert data["job"]["result"]["label"] == prediction.top_label
    assert data["job"]["result"]["probabilities"] == pytest.approx(prediction.probabilities)
    assert data["patient"]["mrn"] == job.image.case.patient.mrn
    delivery = Delivery.objects.get()
    assert (str(delivery.pk), delivery.status, delivery.attempts, delivery.last_status_code) == (
        document["id"],
        "succeeded",
        1,
        200,
    )


def test_a_failing_receiver_gets_exactly_one_successful_delivery(
    tmp_path, webhook_settings, api, radiologist, department_admin
):
    # No model folder: the worker's child has no model to load before its first task (it loads
    # every installed one first, 15-25 s here), and a sign-off needs no inference.
    no_models = tmp_path / "no-models"
    no_models.mkdir()
    case = CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))
    PredictionFactory(job__image__case=case)
    first_wait, second_wait = services.retry_delay(1), services.retry_delay(2)
    with WorkerPool(tmp_path / "workers", model_dir=no_models) as pool, Receiver(answers=[500, 500]) as receiver:
        _, secret = subscribe(department_admin, receiver.url, events=[Event.REPORT_SIGNED])
        worker = pool.start(env=worker_env(webhook_settings))
        signed = time.time()
        response = api.post(
            f"/api/v1/cases/{case.pk}/report/",
            {
                "agrees_with_ai": False,
                "final_label": "other",
                "other_finding": "Pleural effusion",
                "impression": "Effusion.",
            },
            format="json",
        )
        assert response.status_code == 201, response.content
        # Three attempts: two answered 500, each followed by its backoff, and the one answered 200.
        limit = 3 * PICKUP + first_wait + second_wait + 3 * webhook_settings.XNET_WEBHOOK_TIMEOUT
        delivery = wait_for(
            lambda: Delivery.objects.filter(status=Delivery.Status.SUCCEEDED).first(),
            timeout=limit,
            what="the delivery after two failures",
            log=worker.log,
        )
        print(f"first POST {receiver.requests[0]['at'] - signed:.2f} s after the sign-off request")
        # Nothing more comes: the next retry would have come after retry_delay(3).
        time.sleep(services.retry_delay(3) + 1)
    assert (delivery.attempts, delivery.last_status_code, delivery.last_error) == (3, 200, "")
    assert len(receiver.requests) == 3
    documents = [check_signed(request, secret) for request in receiver.requests]
    assert {document["id"] for document in documents} == {str(delivery.pk)}
    assert documents[0]["data"]["report"]["final_label"] == "other"
    times = [request["at"] for request in receiver.requests]
    assert times[1] - times[0] >= first_wait - 0.1  # the backoff, from the settings
    assert times[2] - times[1] >= second_wait - 0.1
    # The admin API shows it (the page reads the same row: tests/test_webhooks_pages.py).
    [row] = token_client(department_admin).get("/api/v1/webhooks/deliveries/").json()["results"]
    assert (row["status"], row["attempts"], row["last_status_code"]) == ("succeeded", 3, 200)
