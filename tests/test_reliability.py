"""Failures of real processes: a worker killed mid-job, a pool child killed mid-job, and a broker
that is down at upload time.

Nothing is simulated: the worker gets SIGKILL (with its pool child, as when a machine dies), the
broker is a real redis-server that the test stops and starts again. Recovery comes from the
workers themselves (their heartbeat sweeps and the claim's take-over of a dead child's job), with
no beat running: beat being down must not strand a job.

Time limits are derived from a measured start-up, not guessed: a loaded machine took 15-17 s to
import TensorFlow, and a fixed 10 s limit failed the recovered job there.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
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
    results_held,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Heartbeats every second, a worker silent for 3 s is dead: recovery in seconds.
HEARTBEAT = 1
LOST_AFTER = 3


@pytest.fixture(scope="module")
def startup() -> float:
    """Seconds a fresh interpreter here takes to import what a worker child imports before its
    first prediction (Django, TensorFlow, Keras): measured now, on this machine and load."""
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); import tensorflow, keras"],
        check=True,
        capture_output=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "xnet_site.settings"},
    )
    return time.monotonic() - started


@pytest.fixture(scope="module")
def recovery_env(startup) -> dict[str, str]:
    """A job limit well above the measured start-up (a recovered job runs in a fresh child that
    imports TensorFlow first), and fast heartbeats."""
    limit = math.ceil(3 * startup) + 10
    return {
        "XNET_JOB_TIME_LIMIT": str(limit),
        "XNET_JOB_STALE_AFTER": str(limit + 5),
        "XNET_HEARTBEAT_INTERVAL": str(HEARTBEAT),
        "XNET_WORKER_LOST_AFTER": str(LOST_AFTER),
        "CELERY_VISIBILITY_TIMEOUT": str(2 * limit),
    }


def _job_deadline(startup: float) -> float:
    """How long a recovered job may take: noticing the loss, a worker's start, a child's start-up
    and the job's own run, each with room for a loaded machine."""
    return LOST_AFTER + 2 * HEARTBEAT + 4 * startup + 30


@pytest.fixture
def workers(tmp_path, installed_models):
    # installed_models: this process's departments run the tiny models too, so uploads' jobs name them.
    with WorkerPool(tmp_path / "workers", model_dir=installed_models) as pool:
        yield pool


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of this test's own, which it may stop: never the shared one on 6379."""
    server = RedisServer(tmp_path / "redis")
    try:
        yield server.start()
    finally:
        server.stop()


def _running(job_id: int) -> InferenceJob | None:
    return InferenceJob.objects.filter(pk=job_id, status=InferenceJob.Status.RUNNING).exclude(worker="").first()


def test_job_of_a_killed_worker_finishes_exactly_once(
    workers, api, radiologist, chest_xray_bytes, recovery_env, startup
):
    first = workers.start(env=recovery_env)
    with results_held():
        body = api_upload(api, case_for(radiologist, "xray"), chest_xray_bytes)
        job_id = body["job"]["id"]
        # The worker claims the job, runs the model and waits to store the results: kill it there.
        wait_for(partial(_running, job_id), timeout=30 + startup, interval=0.05, what="the claim", log=first.log)
        first.kill()
    job = InferenceJob.objects.get(pk=job_id)
    assert (job.status, job.attempt) == (InferenceJob.Status.RUNNING, 1), "the kill came too late"
    assert not Prediction.objects.filter(job_id=job_id).exists()
    [lost_task] = received_task_ids(first.log())

    # Another worker, with no beat anywhere: its heartbeat sweep finds the dead worker silent,
    # puts the job back and runs it.
    second = workers.start(env=recovery_env)
    job = wait_for(lambda: finished_job(job_id), timeout=_job_deadline(startup), what="the job", log=second.log)
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


def test_job_of_a_killed_pool_child_is_taken_over_at_once(
    workers, api, radiologist, chest_xray_bytes, recovery_env, startup
):
    """The child dies, the worker lives: task_reject_on_worker_lost gives the message back, and the
    new child's claim sees the old claimer is gone. No sweep is involved (heartbeats hourly)."""
    env = {**recovery_env, "XNET_HEARTBEAT_INTERVAL": "3600", "XNET_WORKER_LOST_AFTER": "7200"}
    worker = workers.start(env=env)
    with results_held():
        body = api_upload(api, case_for(radiologist, "xray"), chest_xray_bytes)
        job_id = body["job"]["id"]
        job = wait_for(partial(_running, job_id), timeout=30 + startup, interval=0.05, what="the claim", log=worker.log)
        child = int(job.worker.rsplit(" ", 1)[1])
        assert child != worker.process.pid
        os.kill(child, signal.SIGKILL)

    job = wait_for(lambda: finished_job(job_id), timeout=_job_deadline(startup), what="the job", log=worker.log)
    assert job.status == InferenceJob.Status.SUCCEEDED, job.error_message
    assert job.attempt == 2
    assert f"its claimer {worker.name} {child} is gone" in worker.log()
    assert "Sweeper:" not in worker.log()
    assert Prediction.objects.filter(job_id=job_id).count() == 1


def test_upload_while_broker_is_down_is_queued_by_the_sweeper(
    private_redis, workers, api, radiologist, chest_xray_bytes, startup
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
    # No beat: the worker's own sweep (on start and with each heartbeat) publishes both.
    worker = workers.start(
        broker_url=private_redis.url,
        env={"XNET_HEARTBEAT_INTERVAL": "1", "XNET_JOB_UNQUEUED_GRACE": "1", "XNET_JOB_REQUEUE_PENDING_AFTER": "2"},
    )
    for job_id in (unpublished, published):
        job = wait_for(
            partial(finished_job, job_id), timeout=_job_deadline(startup), what=f"job {job_id}", log=worker.log
        )
        assert job.status == InferenceJob.Status.SUCCEEDED, job.error_message
        assert job.attempt == 1
        assert job.queued_at is not None
    assert Prediction.objects.filter(job_id__in=[published, unpublished]).count() == 2
