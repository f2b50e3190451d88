"""Worker batching: one task claims the other pending jobs of its modality and predicts them together."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from diagnosis import services
from diagnosis.models import InferenceJob, Modality, Prediction
from ml import inference
from ml.registry import model_for
from tests.conftest import RESOURCES
from tests.factories import CaseFactory, PatientFactory
from tests.workers import poison_jpeg_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def make_job(radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)

    def make(data: bytes, modality: str = Modality.XRAY) -> InferenceJob:
        case = CaseFactory(patient=patient, created_by=radiologist, modality=modality)
        file = SimpleUploadedFile("chest.png", data)
        return services.image_upload(case=case, file=file, uploaded_by=radiologist)

    return make


@pytest.fixture
def resources():
    return sorted(RESOURCES.glob("kermany_*.jpg"))


def test_one_task_runs_every_waiting_job_of_its_modality(make_job, resources, installed_models):
    xray_jobs = [make_job(path.read_bytes()) for path in resources]
    ct_job = make_job(resources[0].read_bytes(), modality=Modality.CT)

    services.job_run(job_id=xray_jobs[0].pk)

    spec = model_for(Modality.XRAY, installed_models)
    for job, path in zip(xray_jobs, resources, strict=True):
        job.refresh_from_db()
        assert job.status == InferenceJob.Status.SUCCEEDED
        assert job.attempt == 1
        # The batch gives each image the probabilities it gets alone.
        alone = inference.predict(spec, path)
        assert job.prediction.probabilities == pytest.approx(alone, abs=1e-5)
    ct_job.refresh_from_db()
    assert ct_job.status == InferenceJob.Status.PENDING


def test_batched_jobs_redelivered_messages_do_nothing(make_job, resources, installed_models):
    first, second = (make_job(path.read_bytes()) for path in resources[:2])
    services.job_run(job_id=first.pk)
    services.job_run(job_id=second.pk)  # its own message, arriving after the batch ran it
    second.refresh_from_db()
    assert second.status == InferenceJob.Status.SUCCEEDED
    assert second.attempt == 1


def test_batch_size_is_bounded(make_job, resources, installed_models, settings):
    settings.XNET_BATCH_MAX_SIZE = 2
    jobs = [make_job(path.read_bytes()) for path in resources[:3]]
    services.job_run(job_id=jobs[0].pk)
    statuses = []
    for job in jobs:
        job.refresh_from_db()
        statuses.append(job.status)
    assert statuses == [InferenceJob.Status.SUCCEEDED, InferenceJob.Status.SUCCEEDED, InferenceJob.Status.PENDING]


def test_batch_size_one_runs_only_the_tasks_job(make_job, resources, installed_models, settings):
    settings.XNET_BATCH_MAX_SIZE = 1
    first, second = (make_job(path.read_bytes()) for path in resources[:2])
    services.job_run(job_id=second.pk)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (InferenceJob.Status.PENDING, InferenceJob.Status.SUCCEEDED)


def test_an_unreadable_image_fails_alone(make_job, resources, installed_models, settings):
    good, broken, other = (make_job(path.read_bytes()) for path in resources[:3])
    # The stored file was damaged after upload (disk error, partial restore).
    with open(broken.image.file.path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n broken")

    services.job_run(job_id=good.pk)

    for job in (good, broken, other):
        job.refresh_from_db()
    assert good.status == other.status == InferenceJob.Status.SUCCEEDED
    assert broken.status == InferenceJob.Status.FAILED
    assert broken.error_message.startswith("The image could not be decoded the way the model reads it")
    assert "UnidentifiedImageError" in broken.error_message
    # Pillow's own message names the stored file ("cannot identify image file <FieldFile: images/...>").
    assert str(settings.MEDIA_ROOT) not in broken.error_message
    assert broken.image.file.name not in broken.error_message
    assert not hasattr(broken, "prediction")


def test_poison_image_fails_alone_with_its_reason(make_job, resources, installed_models, settings):
    """A greyscale JPEG with a malformed EXIF block in a batch: exif_transpose raises struct.error,
    which used to escape the per-image handling, fail the task and burn an attempt of every job."""
    good, poison, other = (make_job(path.read_bytes()) for path in resources[:3])
    # The upload check refuses this file now (test_uploads_refuse_poison_jpeg); here it reached
    # storage anyway, as files uploaded before the check did.
    with open(poison.image.file.path, "wb") as handle:
        handle.write(poison_jpeg_bytes(resources[1].read_bytes()))

    services.job_run(job_id=poison.pk)

    for job in (good, poison, other):
        job.refresh_from_db()
    assert (good.status, good.attempt) == (InferenceJob.Status.SUCCEEDED, 1)
    assert (other.status, other.attempt) == (InferenceJob.Status.SUCCEEDED, 1)
    assert (poison.status, poison.attempt) == (InferenceJob.Status.FAILED, 1)
    assert "EXIF" in poison.error_message
    assert "struct.error" in poison.error_message
    assert "Gave up" not in poison.error_message
    assert not Prediction.objects.filter(job=poison).exists()


def test_missing_file_fails_alone_without_naming_a_path(make_job, resources, installed_models, settings):
    good, lost = (make_job(path.read_bytes()) for path in resources[:2])
    path = lost.image.file.path
    lost.image.file.storage.delete(lost.image.file.name)

    services.job_run(job_id=good.pk)

    good.refresh_from_db()
    lost.refresh_from_db()
    assert good.status == InferenceJob.Status.SUCCEEDED
    assert lost.status == InferenceJob.Status.FAILED
    assert lost.error_message.startswith("The stored image file could not be read on the server")
    for fragment in (path, str(settings.MEDIA_ROOT), lost.image.file.name, "Errno"):
        assert fragment not in lost.error_message


def test_jobs_out_of_attempts_are_not_batched(make_job, resources, installed_models, settings):
    first, tired = (make_job(path.read_bytes()) for path in resources[:2])
    InferenceJob.objects.filter(pk=tired.pk).update(attempt=settings.XNET_JOB_MAX_ATTEMPTS)
    services.job_run(job_id=first.pk)
    tired.refresh_from_db()
    assert tired.status == InferenceJob.Status.PENDING
    assert tired.attempt == settings.XNET_JOB_MAX_ATTEMPTS


def test_no_model_fails_the_whole_batch_with_the_message(make_job, resources, settings, tmp_path):
    settings.XNET_MODEL_DIR = tmp_path
    jobs = [make_job(path.read_bytes(), modality=Modality.CT) for path in resources[:2]]
    services.job_run(job_id=jobs[0].pk)
    for job in jobs:
        job.refresh_from_db()
        assert job.status == InferenceJob.Status.FAILED
        assert job.error_message == "no model installed for CT"


def test_every_batch_size_reuses_one_traced_function(model_dir):
    """Batches vary from 1 to XNET_BATCH_MAX_SIZE; a retrace per new size would cost a real
    backbone seconds each time (measured with benchmarks/batching.py)."""
    import numpy as np

    spec = model_for(Modality.XRAY, model_dir)
    size = (spec.preprocessing.height, spec.preprocessing.width, 3)
    image = np.random.default_rng(0).random(size, dtype=np.float32)
    for batch_size in (1, 3, 16, 2):
        assert len(inference.analyse_inputs(spec, [image] * batch_size)) == batch_size
    assert inference._analyser(spec).experimental_get_tracing_count() == 1
