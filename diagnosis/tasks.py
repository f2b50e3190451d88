"""Celery tasks: thin adapters that take ids and call services, and the worker's recovery hooks.

`acks_late` plus the claim in `services.job_claim` make redelivery after a worker crash safe.
Database hiccups are retried with backoff and jitter, holding the attempts the task had claimed
(services.JobNotReleased), so a job never stays "running" because its release failed. Errors of
one image are that image's failure (services._run_batch); model problems are failures the user
reads.

Every worker also beats (health app) and sweeps stranded jobs on start and with each heartbeat,
so a dead worker's jobs come back within XNET_WORKER_LOST_AFTER seconds even while beat is down.
"""

from __future__ import annotations

import logging
import os
import random
import time
from functools import partial
from pathlib import Path

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_ready, worker_shutdown
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from diagnosis import services

logger = logging.getLogger(__name__)

_heartbeat = None  # the worker main process's HeartbeatThread


@shared_task(
    bind=True,
    acks_late=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
)
def run_inference_job(self, job_id: int, held: list[list[int]] | None = None) -> None:
    worker = services.this_worker(self.request.hostname or "")
    try:
        services.job_run(job_id=job_id, worker=worker, held=[(pair[0], pair[1]) for pair in held or ()])
    except services.JobNotReleased as exc:
        # The database went away and these attempts are still marked running: the retry
        # resumes them (the sweeper would otherwise wait for XNET_JOB_STALE_AFTER).
        countdown = min(60, 2 ** (self.request.retries + 1)) * random.uniform(0.5, 1.0)  # noqa: S311
        held_now = [list(pair) for pair in exc.held]
        raise self.retry(kwargs={"job_id": job_id, "held": held_now}, countdown=countdown) from exc
    except SoftTimeLimitExceeded:
        services.job_abort(
            job_id=job_id,
            message=f"The model took longer than {settings.XNET_JOB_SOFT_TIME_LIMIT} s and was stopped.",
        )
    except (OperationalError, InterfaceError):
        raise
    except Exception:
        logger.exception("Inference job %s crashed", job_id)
        services.job_abort(
            job_id=job_id, message="Internal error while running the model; administrators can see the log."
        )


@shared_task(acks_late=True, ignore_result=True)
def sweep_stalled_jobs() -> dict:
    report = services.jobs_sweep()
    return {"requeued": report.requeued, "failed": report.failed}


# Worker hooks -----------------------------------------------------------------------------


@worker_ready.connect
def _start_heartbeat(sender=None, **kwargs) -> None:
    """In the worker's main process, once it consumes: beat, and sweep at once and every beat.

    The first sweep takes back what an earlier start of this worker (same hostname) left
    running; later ones what any worker silent for XNET_WORKER_LOST_AFTER left.
    """
    from health.services import HeartbeatThread

    global _heartbeat
    hostname = sender.hostname
    queues = [queue.name for queue in sender.task_consumer.queues] if sender.task_consumer else []
    booted_at = timezone.now()
    _heartbeat = HeartbeatThread(
        name=hostname,
        queues=queues,
        interval=settings.XNET_HEARTBEAT_INTERVAL,
        on_beat=partial(services.jobs_sweep, hostname=hostname, booted_at=booted_at),
    )
    _heartbeat.start()


def staggered_task_limit(base: int) -> int:
    """A child's restart limit, drawn between base and 1.5 x base.

    Celery counts every message, and batching turns most of them into quick no-ops, so children
    that shared one limit reached it together and reloaded TensorFlow at the same moment,
    stalling every queue for half a minute. Drawn per child, restarts spread out.
    """
    return base + random.randint(0, base // 2)  # noqa: S311 - spreading, not security


@worker_process_init.connect
def _stagger_child_restart(**kwargs) -> None:
    """In each new pool child, before its loop starts: replace Celery's shared
    worker_max_tasks_per_child by this child's own staggered limit."""
    from billiard.pool import Worker as PoolWorker
    from billiard.process import current_process

    base = settings.CELERY_WORKER_MAX_TASKS_PER_CHILD
    pool_worker = getattr(current_process(), "_target", None)
    if not base or not isinstance(pool_worker, PoolWorker):
        return
    pool_worker.maxtasks = staggered_task_limit(base)
    logger.info("Pool child %s restarts after %s tasks", current_process().pid, pool_worker.maxtasks)


@worker_process_init.connect
def _load_models(**kwargs) -> None:
    """In each new pool child, before it takes a job: load every installed model.

    A child's first job used to load its model (seconds with ONNX Runtime under load, about 9 s
    with TensorFlow), and a child replaced after its task limit stalled the job that followed.
    The pool hands a child no job before this returns (CELERY_WORKER_PROC_ALIVE_TIMEOUT bounds
    it); the others keep working meanwhile. A model that cannot load is logged and left to the
    job, which fails with the reason.
    """
    from ml import inference
    from ml.registry import installed_models

    started = time.monotonic()
    loaded = []
    for spec in installed_models(Path(settings.XNET_MODEL_DIR)):
        try:
            inference.load(spec)
        except Exception:
            logger.exception("Pool child %s could not load model %s", os.getpid(), spec.label)
        else:
            loaded.append(spec.label)
    logger.info(
        "Pool child %s loaded %s model(s) in %.1f s before its first job: %s",
        os.getpid(),
        len(loaded),
        time.monotonic() - started,
        ", ".join(loaded) or "none",
    )


@worker_shutdown.connect
def _stop_heartbeat(sender=None, **kwargs) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
