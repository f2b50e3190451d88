"""Worker batching: one task claims the other pending jobs of its modality and predicts them together."""

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from diagnosis import services
from diagnosis.models import InferenceJob, Modality, Prediction
from ml import inference
from ml.registry import find_model, model_for
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


def without_worker_copy(job: InferenceJob) -> None:
    """As an image uploaded before worker copies existed: the worker decodes the stored file."""
    storage = job.image.file.storage
    name = services.worker_copy_name(job.image)
    assert storage.exists(name)
    storage.delete(name)


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
    without_worker_copy(broken)
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
    without_worker_copy(poison)
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
    without_worker_copy(lost)
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
    jobs = [make_job(path.read_bytes(), modality=Modality.CT) for path in resources[:3]]
    named = jobs[0].model_name, jobs[0].model_version
    assert named[0], "uploads name the model their job runs (issue 12)"
    # A job from before jobs named their model: the modality's newest installed model runs it.
    InferenceJob.objects.filter(pk__in=[job.pk for job in jobs[1:]]).update(model_name="", model_version="")
    services.job_run(job_id=jobs[0].pk)
    for job in jobs:
        job.refresh_from_db()
        assert job.status == InferenceJob.Status.FAILED
    assert jobs[0].error_message == f"model {named[0]} {named[1]} is not installed"
    assert {job.error_message for job in jobs[1:]} == {"no model installed for CT"}


def _second_version(model_dir, tmp_path):
    """The tiny X-ray model installed twice: as it is, and as version 2.0.0 whose head is changed
    (the softmax bias shifted), so the two give different probabilities."""
    import json
    import shutil

    import keras

    root = tmp_path / "models"
    shutil.copytree(model_dir, root)
    second = shutil.copytree(root / "xray-tiny", root / "xray-tiny-2")
    meta = json.loads((second / "model.json").read_text())
    meta["version"] = "2.0.0"
    (second / "model.json").write_text(json.dumps(meta))
    model = keras.saving.load_model(second / "model.keras", compile=False)
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel, bias + np.arange(len(bias), dtype=bias.dtype)])
    model.save(second / "model.keras")
    return root


def test_two_models_of_a_modality_run_in_one_batch_each_on_its_own_jobs(
    make_job, resources, settings, tmp_path, model_dir
):
    """Issue 12 runs every active model version on an upload: one job per model. The worker runs
    the model each job names, one model call per model, in the same claimed batch."""
    settings.XNET_MODEL_DIR = _second_version(model_dir, tmp_path)
    versions = [("xray-tiny", "1.0.0"), ("xray-tiny", "2.0.0")]
    jobs = []
    for path in resources[:2]:
        first = make_job(path.read_bytes())
        InferenceJob.objects.filter(image=first.image).delete()  # whatever the department runs now
        jobs += [InferenceJob.objects.create(image=first.image, model_name=n, model_version=v) for n, v in versions]

    services.job_run(job_id=jobs[0].pk)

    specs = {
        (spec.name, spec.version): spec for spec in (find_model(settings.XNET_MODEL_DIR, *key) for key in versions)
    }
    for job in jobs:
        job.refresh_from_db()
        assert job.status == InferenceJob.Status.SUCCEEDED, job.error_message
        assert (job.worker, job.started_at) == (jobs[0].worker, jobs[0].started_at)  # one claim
        prediction = job.prediction
        assert (prediction.model_name, prediction.model_version) == (job.model_name, job.model_version)
        alone = inference.predict(specs[(job.model_name, job.model_version)], job.image.file.path)
        assert prediction.probabilities == pytest.approx(alone, abs=1e-5)
    # The two versions really differ, so a job run on the wrong model would show.
    by_image = [(a.prediction.probabilities, b.prediction.probabilities) for a, b in (jobs[0:2], jobs[2:4])]
    assert all(first != pytest.approx(second, abs=1e-3) for first, second in by_image)


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
