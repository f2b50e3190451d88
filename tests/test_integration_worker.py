"""The whole path with real processes: API upload -> Redis -> Celery worker -> PostgreSQL -> page.

The worker is a `celery worker` subprocess on the pytest test database, so rows must really be
committed (transactional tests) and `on_commit` publishes for real.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import pytest

from diagnosis.models import Image, InferenceJob, Prediction
from ml.labels import display_name
from tests.conftest import RESOURCES
from tests.workers import WorkerPool, api_upload, case_for, finished_job, poison_jpeg_bytes, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

JOB_TIMEOUT = 90  # a fresh worker child imports TensorFlow before its first prediction


@pytest.fixture
def workers(tmp_path, settings, installed_models):
    # installed_models: this process's departments run the tiny models too, so uploads' jobs name them.
    with WorkerPool(tmp_path / "workers", model_dir=installed_models) as pool:
        yield pool


def _image_block(html: str, image_id: int) -> str:
    """The markup of one image's block on the case page (id="image-<id>")."""
    match = re.search(rf'id="image-{image_id}"', html)
    assert match, f"no block for image {image_id} on the case page"
    following = re.search(r'id="image-\d+"', html[match.end() :])
    return html[match.start() : match.end() + following.start()] if following else html[match.start() :]


def _text_of(block: str, css_class: str) -> str:
    match = re.search(rf'<(\w+)[^>]*class="[^"]*\b{css_class}\b[^"]*"[^>]*>(.*?)</\1>', block, re.DOTALL)
    assert match, f"no element with class {css_class!r} in:\n{block}"
    return re.sub(r"<[^>]+>", "", match.group(2)).strip()


def test_upload_is_classified_by_a_real_worker(workers, api, rad_client, radiologist, chest_xray_bytes):
    worker = workers.start()
    case = case_for(radiologist, "xray")

    # The second upload reaches a warm, idle worker, which claims it within milliseconds.
    jobs, uploads = [], []
    for _ in range(2):
        body = api_upload(api, case, chest_xray_bytes)
        uploads.append(body)
        done = partial(finished_job, body["job"]["id"])
        jobs.append(wait_for(done, timeout=JOB_TIMEOUT, what="the job", log=worker.log))
    first = uploads[0]

    for job in jobs:
        assert job.status == InferenceJob.Status.SUCCEEDED, job.error_message
        assert job.attempt == 1
        assert (job.model_name, job.model_version) == ("xray-tiny", "1.0.0")
        assert job.queued_at is not None
        assert job.created_at <= job.queued_at <= job.started_at <= job.finished_at
    assert Prediction.objects.filter(job__in=jobs).count() == 2
    prediction = Prediction.objects.get(job=jobs[0])
    assert set(prediction.probabilities) == {"normal", "pneumonia", "covid", "tuberculosis"}
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)

    # The API shows the stored result.
    detail = api.get(first["job"]["url"]).json()
    assert detail["status"] == "succeeded"
    assert detail["attempt"] == 1
    assert detail["model_name"] == "xray-tiny"
    assert detail["prediction"]["top_label"] == prediction.top_label
    assert detail["prediction"]["model_version"] == "1.0.0"
    assert detail["prediction"]["probabilities"] == pytest.approx(prediction.probabilities)

    # So does the case page.
    page = rad_client.get(f"/cases/{case.pk}/")
    assert page.status_code == 200
    block = _image_block(page.content.decode(), first["image"]["id"])
    assert _text_of(block, "job-status").lower() == "succeeded"
    assert _text_of(block, "top-label") == display_name(prediction.top_label)
    assert "1.0.0" in _text_of(block, "model-version")

    # One worker child served both jobs and loaded the model once, not once per task.
    log = worker.log()
    assert len(re.findall(r"Task diagnosis\.tasks\.run_inference_job\[\S+\] succeeded", log)) == 2
    assert len(re.findall(r"Loaded model xray-tiny 1\.0\.0 from ", log)) == 1, log


def test_ct_without_installed_model_fails_with_message(
    workers, api, rad_client, radiologist, chest_xray_bytes, tmp_path
):
    empty = tmp_path / "no-models"
    empty.mkdir()
    worker = workers.start(model_dir=empty)
    case = case_for(radiologist, "ct")

    body = api_upload(api, case, chest_xray_bytes)
    job = wait_for(lambda: finished_job(body["job"]["id"]), timeout=JOB_TIMEOUT, what="the CT job", log=worker.log)

    # The job names the CT model this department runs; this worker's model folder is empty.
    missing = f"model {job.model_name} {job.model_version} is not installed"
    assert (job.model_name, job.model_version) == ("ct-tiny", "1.0.0")
    assert job.status == InferenceJob.Status.FAILED
    assert job.error_message == missing
    assert not Prediction.objects.filter(job=job).exists()
    detail = api.get(body["job"]["url"]).json()
    assert (detail["status"], detail["error_message"], detail["prediction"]) == (
        "failed",
        missing,
        None,
    )
    page = rad_client.get(f"/cases/{case.pk}/")
    block = _image_block(page.content.decode(), body["image"]["id"])
    assert _text_of(block, "job-status").lower() == "failed"
    assert missing in block
    assert 'class="top-label"' not in block


def test_poison_image_in_a_batch_fails_alone_in_a_real_worker(workers, api, radiologist, settings):
    """Fault injection through the real path: three images wait, one of them a greyscale JPEG with
    a malformed EXIF block (stored before the upload check refused such files). The worker's
    first message claims all three for one model call; only the poison one fails, with its
    reason, on its first attempt, and no attempt of the others is burnt."""
    case = case_for(radiologist, "xray")
    sources = sorted(RESOURCES.glob("kermany_*.jpg"))[:3]
    bodies = [api_upload(api, case, path.read_bytes()) for path in sources]
    poisoned = Image.objects.get(pk=bodies[1]["image"]["id"])
    Path(f"{poisoned.file.path}.worker.npz").unlink()  # and no decoded copy (services.worker_copy_name)
    with open(poisoned.file.path, "wb") as handle:
        handle.write(poison_jpeg_bytes(sources[1].read_bytes()))

    worker = workers.start()
    jobs = [
        wait_for(partial(finished_job, body["job"]["id"]), timeout=JOB_TIMEOUT, what="the job", log=worker.log)
        for body in bodies
    ]

    good = [jobs[0], jobs[2]]
    assert [(job.status, job.attempt) for job in good] == [(InferenceJob.Status.SUCCEEDED, 1)] * 2
    poison = jobs[1]
    assert (poison.status, poison.attempt) == (InferenceJob.Status.FAILED, 1)
    assert "EXIF" in poison.error_message
    assert "Gave up" not in poison.error_message
    assert str(settings.MEDIA_ROOT) not in poison.error_message
    # One task ran the batch; the others' messages found their jobs done. The jobs are stored
    # before Celery logs each task's end: wait for the third line instead of reading the log once.
    done = r"Task diagnosis\.tasks\.run_inference_job\[\S+\] succeeded"
    wait_for(lambda: len(re.findall(done, worker.log())) >= 3, timeout=JOB_TIMEOUT, what="3 task ends", log=worker.log)
    log = worker.log()
    assert len(re.findall(done, log)) == 3
    assert "raised unexpected" not in log
    detail = api.get(bodies[1]["job"]["url"]).json()
    assert (detail["status"], detail["error_message"]) == ("failed", poison.error_message)


def test_worker_children_draw_their_own_restart_limit(workers, settings):
    worker = workers.start(env={"CELERY_WORKER_MAX_TASKS_PER_CHILD": "100"})
    pattern = r"Pool child \d+ restarts after (\d+) tasks"
    wait_for(lambda: re.search(pattern, worker.log()), timeout=30, what="the child's limit", log=worker.log)
    limits = [int(n) for n in re.findall(pattern, worker.log())]
    assert len(limits) == 1
    assert 100 <= limits[0] <= 150


PRELOADED = re.compile(r"Pool child (\d+) loaded (\d+) model\(s\) in [\d.]+ s before its first job: (.*)")


def test_a_fresh_pool_child_loads_its_models_before_its_first_job(workers, api, radiologist, chest_xray_bytes):
    """Every pool child loads each installed model when it starts, so no job waits for a load,
    and a child replaced after its task limit (1 here: every job gets a new child) is ready
    before it takes the next job."""
    worker = workers.start(env={"CELERY_WORKER_MAX_TASKS_PER_CHILD": "1"})
    case = case_for(radiologist, "xray")
    children = []
    for _ in range(2):
        # The next child has loaded its models before anything is uploaded for it.
        child = wait_for(
            lambda: [found for found in PRELOADED.findall(worker.log()) if found[0] not in children],
            timeout=JOB_TIMEOUT,
            what="a new pool child's models",
            log=worker.log,
        )[0]
        assert child[1:] == ("2", "ct-tiny 1.0.0, xray-tiny 1.0.0"), child
        children.append(child[0])
        body = api_upload(api, case, chest_xray_bytes)
        job = wait_for(partial(finished_job, body["job"]["id"]), timeout=JOB_TIMEOUT, what="the job", log=worker.log)
        assert job.status == InferenceJob.Status.SUCCEEDED, job.error_message
        assert job.worker.endswith(f" {child[0]}")  # the job ran in that child
    assert len(set(children)) == 2
    # One load of each model per child, in the child's start-up: none in a job. (A third child may
    # be starting by now: only what precedes the second child's start-up line is counted.)
    log = worker.log()
    first, second = [match.start() for match in PRELOADED.finditer(log)][:2]
    loads = [match.start() for match in re.finditer(r"Loaded model xray-tiny 1\.0\.0 from ", log[:second])]
    assert len(loads) == 2, log
    assert loads[0] < first < loads[1], log
