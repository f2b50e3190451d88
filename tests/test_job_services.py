"""The inference-job state machine, driven directly through the services (no broker)."""

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from diagnosis import services
from diagnosis.models import InferenceJob, Prediction
from tests.factories import CaseFactory, InferenceJobFactory, PatientFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def xray_case(radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    return CaseFactory(patient=patient, created_by=radiologist)


def _upload(case, user, data, name="chest.jpg"):
    return services.image_upload(case=case, file=SimpleUploadedFile(name, data), uploaded_by=user)


def test_upload_queues_job_on_commit(xray_case, radiologist, chest_xray_bytes, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        job = _upload(xray_case, radiologist, chest_xray_bytes)
    assert job.status == InferenceJob.Status.PENDING
    assert len(callbacks) == 1
    image = job.image
    assert (image.width, image.height, image.format) == (224, 224, "JPEG")
    assert len(image.sha256) == 64
    assert image.file.read() == chest_xray_bytes


def test_job_run_stores_calibrated_prediction(xray_case, radiologist, chest_xray_bytes, installed_models):
    job = _upload(xray_case, radiologist, chest_xray_bytes)
    services.job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == InferenceJob.Status.SUCCEEDED
    assert job.attempt == 1
    assert (job.model_name, job.model_version) == ("xray-tiny", "1.0.0")
    prediction = job.prediction
    assert set(prediction.probabilities) == {"normal", "pneumonia", "covid", "tuberculosis"}
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction.top_probability == max(prediction.probabilities.values())
    assert job.started_at <= job.finished_at


def test_second_delivery_does_nothing(xray_case, radiologist, chest_xray_bytes, installed_models):
    job = _upload(xray_case, radiologist, chest_xray_bytes)
    services.job_run(job_id=job.pk)
    services.job_run(job_id=job.pk)
    assert Prediction.objects.filter(job=job).count() == 1
    job.refresh_from_db()
    assert job.attempt == 1


def test_no_model_installed_fails_with_message(radiologist, chest_xray_bytes, settings, tmp_path):
    settings.XNET_MODEL_DIR = tmp_path / "empty"
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    case = CaseFactory(patient=patient, created_by=radiologist, modality="ct")
    job = _upload(case, radiologist, chest_xray_bytes)
    services.job_run(job_id=job.pk)
    job.refresh_from_db()
    # The department's CT deployment names a model whose folder is not installed (issue 12: a job
    # runs the model it names).
    assert job.status == InferenceJob.Status.FAILED
    assert job.error_message == "model test-ct 1.0.0 is not installed"
    assert not Prediction.objects.filter(job=job).exists()


def test_stale_attempt_cannot_complete(xray_case, radiologist, chest_xray_bytes):
    job = _upload(xray_case, radiologist, chest_xray_bytes)
    claimed = services.job_claim(job_id=job.pk)
    stored = services.job_succeed(
        job_id=job.pk, attempt=claimed.attempt + 1, model_name="m", model_version="1", probabilities={"a": 1.0}
    )
    assert stored is False
    assert not Prediction.objects.exists()


def test_sweeper_requeues_dead_workers_job_then_gives_up(settings, django_capture_on_commit_callbacks):
    settings.XNET_JOB_MAX_ATTEMPTS = 2
    long_ago = timezone.now() - timedelta(seconds=settings.XNET_JOB_STALE_AFTER + 5)
    job = InferenceJobFactory(status=InferenceJob.Status.RUNNING, attempt=1, started_at=long_ago)
    report = services.jobs_sweep()
    job.refresh_from_db()
    assert report.requeued == 1
    assert job.status == InferenceJob.Status.PENDING

    InferenceJob.objects.filter(pk=job.pk).update(status="running", attempt=2, started_at=long_ago)
    report = services.jobs_sweep()
    job.refresh_from_db()
    assert report.failed == 1
    assert job.status == InferenceJob.Status.FAILED
    assert "Gave up after 2 attempts" in job.error_message


def test_sweeper_leaves_recent_jobs_alone():
    InferenceJobFactory(status=InferenceJob.Status.RUNNING, attempt=1, started_at=timezone.now())
    InferenceJobFactory(status=InferenceJob.Status.PENDING, queued_at=timezone.now())
    assert services.jobs_sweep().requeued == 0


def test_case_reading_order_follows_upload_and_result(xray_case, radiologist, chest_xray_bytes, installed_models):
    job = _upload(xray_case, radiologist, chest_xray_bytes)
    xray_case.refresh_from_db()
    assert xray_case.waiting_since == job.image.uploaded_at
    assert (xray_case.lead_label, xray_case.lead_probability) == ("", None)  # no result yet

    services.job_run(job_id=job.pk)
    xray_case.refresh_from_db()
    prediction = Prediction.objects.get(job=job)
    assert (xray_case.lead_label, xray_case.lead_probability) == (prediction.top_label, prediction.top_probability)
