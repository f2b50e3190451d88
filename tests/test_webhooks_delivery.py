"""Webhooks without a worker: signatures, where a webhook may point, events becoming deliveries,
and attempts against a real HTTP receiver on loopback (retry, backoff, give up, timeout).

tests/test_webhooks_worker.py runs the same deliveries through a real Celery worker.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from diagnosis.models import InferenceJob
from reviews import services as review_services
from tests.factories import (
    CaseFactory,
    DepartmentAdminFactory,
    ImageFactory,
    InferenceJobFactory,
    ModelDeploymentFactory,
    PatientFactory,
    PredictionFactory,
)
from webhooks import security, services
from webhooks.models import Delivery, Event, Subscription

pytestmark = pytest.mark.django_db


class Receiver:
    """A tiny HTTP server on a free loopback port that records every POST and answers with the
    next status of `answers` (then 200), after `delay` seconds."""

    def __init__(self, answers: list[int] | None = None, delay: float = 0) -> None:
        self.answers = list(answers or [])
        self.delay = delay
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    receiver.requests.append(
                        {"at": time.time(), "path": self.path, "headers": dict(self.headers), "body": body}
                    )
                time.sleep(receiver.delay)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/xnet"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def loopback_allowed(settings):
    settings.XNET_WEBHOOK_ALLOW_LOOPBACK = True
    settings.XNET_WEBHOOK_RETRY_SECONDS = 1
    settings.XNET_WEBHOOK_MAX_ATTEMPTS = 3
    settings.XNET_WEBHOOK_TIMEOUT = 2
    return settings


@pytest.fixture
def receiver():
    with Receiver() as server:
        yield server


def subscribe(admin, url: str, events=(Event.JOB_FINISHED, Event.REPORT_SIGNED)) -> tuple[Subscription, str]:
    return services.subscription_create(created_by=admin, url=url, events=list(events), description="EHR bridge")


# Signatures --------------------------------------------------------------------------------


def test_signature_verifies_with_its_secret_only():
    body, now = b'{"id":"x"}', time.time()
    timestamp = str(int(now))
    header = security.sign("whsec_right", timestamp, body)
    assert header.startswith("sha256=")
    assert len(header) == 7 + 64
    assert security.verify_signature("whsec_right", timestamp, body, header, tolerance_s=300, now=now)
    assert not security.verify_signature("whsec_wrong", timestamp, body, header, tolerance_s=300, now=now)
    assert not security.verify_signature("whsec_right", timestamp, body + b" ", header, tolerance_s=300, now=now)
    assert not security.verify_signature("whsec_right", str(int(now) + 1), body, header, tolerance_s=300, now=now)
    # A captured delivery replayed later than the tolerance fails; within it, passes.
    assert security.verify_signature("whsec_right", timestamp, body, header, tolerance_s=300, now=now + 299)
    assert not security.verify_signature("whsec_right", timestamp, body, header, tolerance_s=300, now=now + 301)
    assert not security.verify_signature("whsec_right", "not-a-number", body, header)
    assert not security.verify_signature("whsec_right", timestamp, body, "", tolerance_s=300, now=now)


# Where a webhook may point -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.215.14/hook",  # public, but not https
        "https://10.0.0.5/hook",  # private
        "https://192.168.1.20/hook",
        "https://172.16.4.1/hook",
        "https://169.254.169.254/latest/meta-data/",  # link-local: cloud metadata
        "https://[fe80::1]/hook",
        "https://[fd00::1]/hook",  # unique local
        "https://[::ffff:10.0.0.5]/hook",  # private behind an IPv4-mapped address
        "https://0.0.0.0/hook",
        "https://127.0.0.1/hook",  # loopback without the development allowance
        "https://localhost/hook",
        "ftp://93.184.215.14/hook",
        "https://user:pw@93.184.215.14/hook",
        "https://host.invalid/hook",  # does not resolve
        "not a url",
    ],
)
def test_refused_targets(settings, url):
    settings.XNET_WEBHOOK_ALLOW_LOOPBACK = False
    with pytest.raises(ValidationError) as refused:
        security.resolve(url)
    assert refused.value.message_dict["url"][0]


def test_accepted_targets(settings):
    settings.XNET_WEBHOOK_ALLOW_LOOPBACK = False
    target = security.resolve("https://93.184.215.14:8443/hook?x=1")
    assert (target.scheme, target.address, target.port, target.path) == ("https", "93.184.215.14", 8443, "/hook?x=1")
    settings.XNET_WEBHOOK_ALLOW_LOOPBACK = True  # development and tests
    assert security.resolve("http://127.0.0.1:9/hook").address == "127.0.0.1"
    with pytest.raises(ValidationError):
        security.resolve("http://10.0.0.5/hook")  # the allowance is for loopback only


# Subscriptions -------------------------------------------------------------------------------


def test_create_returns_the_secret_once(department_admin, loopback_allowed, receiver):
    subscription, secret = subscribe(department_admin, receiver.url)
    assert secret.startswith("whsec_")
    assert len(secret) > 40
    assert subscription.department_id == department_admin.department_id
    assert subscription.events == ["job.finished", "report.signed"]
    _, another = subscribe(department_admin, receiver.url)
    assert another != secret


def test_create_refusals(department_admin, radiologist, loopback_allowed):
    with pytest.raises(ValidationError) as refused:
        services.subscription_create(created_by=department_admin, url="", events=[])
    assert set(refused.value.message_dict) == {"url", "events"}
    with pytest.raises(ValidationError) as refused:
        services.subscription_create(created_by=department_admin, url="https://10.1.1.1/", events=["job.done"])
    assert "private" in refused.value.message_dict["url"][0]
    assert "job.done" in refused.value.message_dict["events"][0]
    with pytest.raises(PermissionError):
        services.subscription_create(created_by=radiologist, url="https://93.184.215.14/", events=["job.finished"])
    assert not Subscription.objects.exists()


# Events become deliveries ----------------------------------------------------------------------


def signed_report(user):
    case = CaseFactory(patient=PatientFactory(department=user.department, created_by=user), created_by=user)
    PredictionFactory(job__image__case=case)
    return review_services.report_sign(case=case, signed_by=user, agrees_with_ai=True, impression="Clear.")


def test_a_signed_report_becomes_one_delivery_per_subscription(
    django_capture_on_commit_callbacks, department_admin, radiologist, outsider, loopback_allowed, receiver
):
    report_hook, _ = subscribe(department_admin, receiver.url, events=[Event.REPORT_SIGNED])
    subscribe(department_admin, receiver.url, events=[Event.JOB_FINISHED])  # another event
    off, _ = subscribe(department_admin, receiver.url, events=[Event.REPORT_SIGNED])
    services.subscription_deactivate(subscription=off, user=department_admin)
    elsewhere = DepartmentAdminFactory(department=outsider.department)
    subscribe(elsewhere, receiver.url, events=[Event.REPORT_SIGNED])  # another department's
    with django_capture_on_commit_callbacks(execute=True):
        report = signed_report(radiologist)
    delivery = Delivery.objects.get(event=Event.REPORT_SIGNED)  # (its AI job made a job.finished one)
    assert (delivery.subscription, delivery.event, delivery.object_key) == (
        report_hook,
        "report.signed",
        f"report:{report.pk}",
    )
    assert delivery.payload["report"]["id"] == report.pk
    assert delivery.payload["report"]["fhir_url"] == f"/fhir/DiagnosticReport/{report.pk}"
    assert delivery.payload["report"]["final_label"] == "pneumonia"
    assert delivery.payload["patient"] == {"id": report.case.patient_id, "mrn": report.case.patient.mrn}
    # The same event for the same object again adds nothing.
    from webhooks import events

    events.report_signed(report.pk)
    assert Delivery.objects.filter(event=Event.REPORT_SIGNED).count() == 1


def test_a_rolled_back_signature_sends_nothing(
    django_capture_on_commit_callbacks, department_admin, radiologist, loopback_allowed, receiver
):
    subscribe(department_admin, receiver.url)
    from django.db import transaction

    def sign_then_fail() -> None:
        with transaction.atomic():
            signed_report(radiologist)
            raise RuntimeError("rolled back")

    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(RuntimeError):
        sign_then_fail()
    assert callbacks == []
    assert not Delivery.objects.exists()


def test_a_finished_job_becomes_a_delivery(
    django_capture_on_commit_callbacks, department_admin, radiologist, loopback_allowed, receiver
):
    subscribe(department_admin, receiver.url, events=[Event.JOB_FINISHED])
    case = CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))
    with django_capture_on_commit_callbacks(execute=True):
        prediction = PredictionFactory(job__image__case=case)
    job = prediction.job
    delivery = Delivery.objects.get()
    assert delivery.object_key == f"job:{job.pk}"
    data = delivery.payload
    assert data["job"]["id"] == job.pk
    assert data["job"]["status"] == "succeeded"
    assert data["job"]["url"] == f"/api/v1/jobs/{job.pk}/"
    assert data["job"]["result"] == {
        "label": "pneumonia",
        "probability": 0.7,
        "probabilities": {"normal": 0.1, "pneumonia": 0.7, "covid": 0.15, "tuberculosis": 0.05},
    }
    assert data["case"] == {"id": case.pk, "modality": "xray"}
    assert data["image"] == {"id": job.image_id, "position": 1}
    # A silent model's job is no event: its result stays inside XNET (the API answers 404 for it).
    ModelDeploymentFactory(department=radiologist.department, model_name="test-xray-silent")
    with django_capture_on_commit_callbacks(execute=True):
        PredictionFactory(job__image__case=case, job__model_name="test-xray-silent")
    assert Delivery.objects.count() == 1
    # A pending or running job is no event; a finished job saved again for another field is none.
    with django_capture_on_commit_callbacks(execute=True):
        InferenceJob.objects.get(pk=job.pk).save(update_fields=["gate_scores"])
        pending = InferenceJob(image=job.image, status=InferenceJob.Status.PENDING)
        pending.save()
    assert Delivery.objects.count() == 1


def test_the_finished_jobs_department_decides_with_or_without_its_relations_loaded(
    django_capture_on_commit_callbacks, department_admin, radiologist, outsider, loopback_allowed, receiver
):
    """The worker's jobs carry image, case and patient, and the check reads the department from
    them; a job saved without them is looked up by joins. Both answer for the job's own department."""
    subscribe(department_admin, receiver.url, events=[Event.JOB_FINISHED])
    elsewhere = CaseFactory(patient=PatientFactory(department=outsider.department, created_by=outsider))
    with django_capture_on_commit_callbacks(execute=True):
        other = InferenceJobFactory(image=ImageFactory(case=elsewhere), status=InferenceJob.Status.FAILED)
    assert other.loaded_department_id() == outsider.department_id
    assert Delivery.objects.count() == 0
    case = CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))
    job = InferenceJobFactory(image=ImageFactory(case=case))
    bare = InferenceJob.objects.get(pk=job.pk)  # no relations loaded
    assert bare.loaded_department_id() is None
    bare.status = InferenceJob.Status.FAILED
    with django_capture_on_commit_callbacks(execute=True):
        bare.save(update_fields=["status"])
    assert Delivery.objects.get().object_key == f"job:{job.pk}"


# Attempts against a real receiver ----------------------------------------------------------------


def make_delivery(admin, url: str) -> tuple[Delivery, str]:
    subscription, secret = subscribe(admin, url)
    delivery = Delivery.objects.create(
        subscription=subscription,
        event=Event.REPORT_SIGNED,
        object_key="report:1",
        payload={"report": {"id": 1}},
        next_attempt_at=timezone.now(),
    )
    return delivery, secret


def due_now(delivery: Delivery) -> None:
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


def test_a_delivery_is_signed_and_sent_once(department_admin, loopback_allowed, receiver):
    delivery, secret = make_delivery(department_admin, receiver.url)
    assert services.delivery_attempt(delivery_id=str(delivery.pk)) is None
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 1, 200)
    assert delivery.delivered_at
    assert delivery.next_attempt_at is None
    [request] = receiver.requests
    headers, body = request["headers"], request["body"]
    assert request["path"] == "/hooks/xnet"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-XNET-Delivery"] == str(delivery.pk)
    assert headers["X-XNET-Event"] == "report.signed"
    assert abs(int(headers["X-XNET-Timestamp"]) - time.time()) < 60
    assert security.verify_signature(secret, headers["X-XNET-Timestamp"], body, headers["X-XNET-Signature"])
    assert not security.verify_signature("whsec_other", headers["X-XNET-Timestamp"], body, headers["X-XNET-Signature"])
    document = json.loads(body)
    assert document == {
        "id": str(delivery.pk),
        "event": "report.signed",
        "created_at": delivery.created_at.isoformat(),
        "data": {"report": {"id": 1}},
    }
    # A duplicate message for a finished delivery sends nothing.
    assert services.delivery_attempt(delivery_id=str(delivery.pk)) is None
    assert len(receiver.requests) == 1


def test_failures_back_off_then_succeed(department_admin, loopback_allowed):
    with Receiver(answers=[500, 302]) as receiver:
        delivery, _ = make_delivery(department_admin, receiver.url)
        assert services.delivery_attempt(delivery_id=str(delivery.pk)) == services.retry_delay(1) == 1
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("retrying", 1, 500)
        assert delivery.last_error == "HTTP 500"
        assert delivery.next_attempt_at == delivery.last_attempt_at + timedelta(seconds=1)
        # A copy of the message arriving before the planned time sends nothing.
        assert services.delivery_attempt(delivery_id=str(delivery.pk)) is None
        assert len(receiver.requests) == 1
        due_now(delivery)
        assert services.delivery_attempt(delivery_id=str(delivery.pk)) == services.retry_delay(2) == 2
        delivery.refresh_from_db()
        assert (delivery.attempts, delivery.last_status_code) == (2, 302)
        assert delivery.last_error == "HTTP 302 (redirects are not followed)"
        due_now(delivery)
        assert services.delivery_attempt(delivery_id=str(delivery.pk)) is None
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == (
            "succeeded",
            3,
            200,
            "",
        )
        assert len(receiver.requests) == 3
        # Every attempt carries the same delivery id and body, freshly signed.
        assert len({r["headers"]["X-XNET-Delivery"] for r in receiver.requests}) == 1
        assert len({r["body"] for r in receiver.requests}) == 1


def test_backoff_is_exponential_and_capped(settings):
    settings.XNET_WEBHOOK_RETRY_SECONDS = 30
    settings.XNET_WEBHOOK_RETRY_MAX_SECONDS = 3600
    assert [services.retry_delay(n) for n in range(1, 10)] == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_gives_up_after_the_last_attempt(department_admin, loopback_allowed):
    with Receiver(answers=[503, 503, 503, 200]) as receiver:
        delivery, _ = make_delivery(department_admin, receiver.url)
        for attempt in range(3):
            if attempt:
                due_now(delivery)
            services.delivery_attempt(delivery_id=str(delivery.pk))
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 3, None)
        assert services.delivery_attempt(delivery_id=str(delivery.pk)) is None
        assert len(receiver.requests) == 3


def test_a_receiver_that_does_not_answer_in_time(department_admin, loopback_allowed, settings):
    settings.XNET_WEBHOOK_TIMEOUT = 1
    with Receiver(delay=3) as receiver:
        delivery, _ = make_delivery(department_admin, receiver.url)
        started = time.monotonic()
        services.delivery_attempt(delivery_id=str(delivery.pk))
        assert time.monotonic() - started < 3  # the attempt did not wait for the slow answer
    delivery.refresh_from_db()
    assert (delivery.status, delivery.last_status_code) == ("retrying", None)
    assert delivery.last_error == "No answer within 1 s."


def test_nobody_listening(department_admin, loopback_allowed):
    with Receiver() as receiver:
        url = receiver.url
    delivery, _ = make_delivery(department_admin, url)  # registered while it listened: now closed
    services.delivery_attempt(delivery_id=str(delivery.pk))
    delivery.refresh_from_db()
    assert delivery.status == "retrying"
    assert "ConnectionRefusedError" in delivery.last_error


def test_target_checked_again_at_delivery(department_admin, loopback_allowed, receiver, settings):
    delivery, _ = make_delivery(department_admin, receiver.url)
    settings.XNET_WEBHOOK_ALLOW_LOOPBACK = False  # production settings
    services.delivery_attempt(delivery_id=str(delivery.pk))
    delivery.refresh_from_db()
    assert delivery.last_error.startswith("Refused target:")
    assert receiver.requests == []


def test_deactivating_gives_up_pending_deliveries(department_admin, loopback_allowed, receiver):
    delivery, _ = make_delivery(department_admin, receiver.url)
    services.subscription_deactivate(subscription=delivery.subscription, user=department_admin)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.last_error) == ("failed", "The webhook was deactivated.")
    assert services.delivery_attempt(delivery_id=str(delivery.pk)) is None
    assert receiver.requests == []


def queued_deliveries(broker_url: str, queue: str) -> list[tuple[str, str]]:
    """(task name, args repr) of the messages waiting in a Redis queue."""
    import redis

    client = redis.Redis.from_url(broker_url)
    try:
        messages = [json.loads(raw) for raw in client.lrange(queue, 0, -1)]
    finally:
        client.close()
    return [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages]


def test_sweep_requeues_only_overdue_deliveries(department_admin, loopback_allowed, receiver, settings):
    from tests.workers import flush_broker

    settings.XNET_WEBHOOK_REPUBLISH_AFTER = 60
    overdue, _ = make_delivery(department_admin, receiver.url)
    Delivery.objects.filter(pk=overdue.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=61))
    Delivery.objects.create(  # due 30 s ago: its message may still be on its way
        subscription=overdue.subscription,
        event=Event.JOB_FINISHED,
        object_key="job:1",
        payload={},
        next_attempt_at=timezone.now() - timedelta(seconds=30),
    )
    flush_broker(settings.CELERY_BROKER_URL)
    try:
        assert services.deliveries_sweep() == 1
        assert queued_deliveries(settings.CELERY_BROKER_URL, settings.XNET_WEBHOOK_QUEUE) == [
            ("webhooks.tasks.deliver_webhook", repr([str(overdue.pk)]))
        ]
    finally:
        flush_broker(settings.CELERY_BROKER_URL)
