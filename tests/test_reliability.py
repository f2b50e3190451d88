"""Failures of real processes: a worker killed mid-job, and a broker that is down at upload time.

Nothing is simulated: the worker gets SIGKILL (with its pool child, as when a machine dies), the
broker is a real redis-server that the test stops and starts again, and recovery comes from the
beat-driven sweeper in a real worker.
"""

from __future__ import annotations

import time
from functools import partial

import pytest

from diagnosis.models import InferenceJob, Prediction
from tests.workers import (
    RedisServer,
    WorkerPool,
    api_upload,
    broker_switched_to,
    case_for,
    finished_job,
    received_task_ids,
    redeliver_unacked,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Short limits so a dead worker's job is found quickly: stale after 12 s, swept every second.
FAST_RECOVERY = {
    "XNET_JOB_TIME_LIMIT": "10",
    "XNET_JOB_STALE_AFTER": "12",
    "XNET_SWEEP_INTERVAL": "1",
    "CELERY_VISIBILITY_TIMEOUT": "15",
}


@pytest.fixture
def workers(tmp_path, model_dir):
    with WorkerPool(tmp_path / "workers", model_dir=model_dir) as pool:
        yield pool


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of this test's own, which it may stop: never the shared one on 6379."""
    server = RedisServer(tmp_path / "redis")
    try:
        yield server.start()
    finally:
        server.stop()


def test_job_of_a_killed_worker_finishes_exactly_once(workers, api, radiologist, chest_xray_bytes):
    first = workers.start(env=FAST_RECOVERY)
    body = api_upload(api, case_for(radiologist, "xray"), chest_xray_bytes)
    job_id = body["job"]["id"]

    # A fresh worker child claims the job, then spends seconds importing TensorFlow: kill it there.
    wait_for(
        lambda: InferenceJob.objects.filter(pk=job_id, status=InferenceJob.Status.RUNNING).exists(),
        timeout=30,
        interval=0.02,
        what="the first worker to claim the job",
        log=first.log,
    )
    first.kill()
    job = InferenceJob.objects.get(pk=job_id)
    assert (job.status, job.attempt) == (InferenceJob.Status.RUNNING, 1), "the kill came too late"
    assert not Prediction.objects.filter(job_id=job_id).exists()
    [lost_task] = received_task_ids(first.log())

    # A new worker's sweeper finds the job stale, puts it back and the worker runs it again.
    second = workers.start(beat=True, env=FAST_RECOVERY)
    job = wait_for(lambda: finished_job(job_id), timeout=60, what="the job to finish", log=second.log)
    assert job.status == InferenceJob.Status.SUCCEEDED, job.error_message
    assert job.attempt == 2
    assert Prediction.objects.filter(job_id=job_id).count() == 1
    assert "Sweeper: 1 jobs re-queued (1 published), 0 failed" in second.log()

    # acks_late kept the dead worker's message; when it is delivered again, nothing changes.
    assert redeliver_unacked(workers.broker_url, lost_task), "the killed worker's message was lost"
    wait_for(
        lambda: (
            received_task_ids(second.log()).count(lost_task) == 1
            and f"run_inference_job[{lost_task}] succeeded" in second.log()
        ),
        timeout=30,
        what="the redelivered message to be processed",
        log=second.log,
    )
    job.refresh_from_db()
    assert (job.status, job.attempt) == (InferenceJob.Status.SUCCEEDED, 2)
    assert Prediction.objects.filter(job_id=job_id).count() == 1


def test_upload_while_broker_is_down_is_queued_by_the_sweeper(
    private_redis, workers, api, radiologist, chest_xray_bytes
):
    """An upload never waits on a dead broker; the sweeper publishes what could not be published."""
    # private_redis comes before workers, so teardown stops the worker before its broker.
    case = case_for(radiologist, "xray")
    with broker_switched_to(private_redis.url):
        # While the broker is up the upload is published at once (and the pool holds a connection).
        published = api_upload(api, case, chest_xray_bytes)["job"]["id"]
        assert InferenceJob.objects.get(pk=published).queued_at is not None

        private_redis.stop()  # the queued message dies with it: this Redis keeps nothing on disk
        started = time.monotonic()
        unpublished = api_upload(api, case, chest_xray_bytes)["job"]["id"]
        assert time.monotonic() - started < 10, "the upload waited on the broker"
        job = InferenceJob.objects.get(pk=unpublished)
        assert job.status == InferenceJob.Status.PENDING
        assert job.queued_at is None

    private_redis.start()
    worker = workers.start(
        broker_url=private_redis.url,
        beat=True,
        env={"XNET_SWEEP_INTERVAL": "1", "XNET_JOB_UNQUEUED_GRACE": "1", "XNET_JOB_REQUEUE_PENDING_AFTER": "2"},
    )
    for job_id in (unpublished, published):
        job = wait_for(partial(finished_job, job_id), timeout=60, what=f"job {job_id}", log=worker.log)
        assert job.status == InferenceJob.Status.SUCCEEDED, job.error_message
        assert job.attempt == 1
        assert job.queued_at is not None
    assert Prediction.objects.filter(job_id__in=[published, unpublished]).count() == 2
