"""Celery tasks: thin adapters that take ids and call services.

`acks_late` plus the claim in `services.job_claim` make redelivery after a worker crash safe.
Database hiccups are retried with backoff and jitter; model problems are failures the user reads.
"""

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError

from diagnosis import services

logger = logging.getLogger(__name__)


@shared_task(
    acks_late=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
)
def run_inference_job(job_id: int) -> None:
    try:
        services.job_run(job_id=job_id)
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
