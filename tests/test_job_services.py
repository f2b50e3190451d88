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


def _chest_jpeg(size: int) -> bytes:
    import io

    from PIL import Image as PILImage

    from tests.conftest import RESOURCES

    with PILImage.open(RESOURCES / "kermany_normal_1.jpg") as picture:
        large = picture.convert("L").resize((size, size), PILImage.Resampling.BICUBIC)
    buffer = io.BytesIO()
    large.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def test_a_large_upload_is_decoded_once(xray_case, radiologist, installed_models):
    """A 2048 px upload is decoded at upload (to check it); the worker reads the decoded copy
    stored beside it, resized to the model's input, and gets the same input and gate measures
    as decoding the file. The stored file is not read again: damaged after the upload, the job
    still succeeds with the probabilities of the original."""
    import io

    import numpy as np
    from PIL import Image as PILImage

    from diagnosis.uploads import read_worker_copy
    from ml import gate, inference
    from ml.registry import model_for

    data = _chest_jpeg(2048)
    job = _upload(xray_case, radiologist, data, name="large.jpg")
    spec = model_for("xray", installed_models)
    size = (spec.preprocessing.width, spec.preprocessing.height)
    with job.image.file.storage.open(services.worker_copy_name(job.image)) as handle:
        copy = read_worker_copy(handle)
    with PILImage.open(io.BytesIO(data)) as picture:
        picture.load()
        assert copy.measures == gate.image_measures(picture)
        from_file = inference.prepare_input(spec, picture)
    np.testing.assert_array_equal(inference.prepare_input(spec, copy.greys[size]), from_file)
    expected = inference.predict(spec, io.BytesIO(data))

    with open(job.image.file.path, "wb") as handle:
        handle.write(b"not an image any more")
    services.job_run(job_id=job.pk)

    job.refresh_from_db()
    assert job.status == InferenceJob.Status.SUCCEEDED, job.error_message
    assert job.prediction.probabilities == pytest.approx(expected, abs=1e-6)
    assert (job.gate_scores["width"], job.gate_scores["height"]) == (2048, 2048)


def test_a_batch_is_claimed_and_stored_in_one_statement_each_and_orders_its_case_once(
    xray_case, radiologist, chest_xray_bytes, installed_models
):
    """Issue 11: one transaction claims the batch (one UPDATE starts every job), one stores it,
    and the case's reading order is refreshed once for the batch, not once per saved row."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    jobs = [_upload(xray_case, radiologist, chest_xray_bytes) for _ in range(3)]
    with CaptureQueriesContext(connection) as captured:
        services.job_run(job_id=jobs[0].pk)
    statements = [query["sql"] for query in captured.captured_queries]

    for job in jobs:
        job.refresh_from_db()
        assert job.status == InferenceJob.Status.SUCCEEDED
    started = [sql for sql in statements if sql.startswith('UPDATE "diagnosis_inferencejob"') and "attempt" in sql]
    assert len(started) == 1, statements
    locks_of_the_case = [sql for sql in statements if 'FROM "diagnosis_case"' in sql and "FOR UPDATE" in sql]
    assert len(locks_of_the_case) == 1, statements
    inserted = [sql for sql in statements if sql.startswith('INSERT INTO "diagnosis_prediction"')]
    assert len(inserted) == 3
    xray_case.refresh_from_db()
    lead = max((job.prediction for job in jobs), key=lambda p: (p.top_label != "normal", p.top_probability))
    assert xray_case.lead_probability == pytest.approx(lead.top_probability)
