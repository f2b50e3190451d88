"""Whether a waiting job is the first classification since its workers started (issue 13).

A worker process loads its models before its first job (issue 13 reports about 24 s for the
first classification after start; loading them as the worker starts moves that wait, it does
not remove it). Meanwhile the page said only "Waiting for a worker…". A worker that
has finished a job since it started has its models loaded; when no live worker of the job's queue
has, the case page says the model is loading. Workers report when they started (health app
heartbeats) and which jobs they finished (InferenceJob.worker), so this needs no new state.
"""

from __future__ import annotations

from django.db.models import Q

from diagnosis.models import InferenceJob
from health.selectors import live_workers

LOADING_NOTE = "Loading the model (first classification after start)"


def first_after_start(job: InferenceJob) -> bool:
    """True for a pending or running job when live workers of its queue exist and none of them
    has finished a job since it started. False with no live worker (the dashboard warns about
    that), and once any of them has classified something."""
    if job.status not in (InferenceJob.Status.PENDING, InferenceJob.Status.RUNNING):
        return False
    workers = live_workers(queue=job.image.modality)
    if not workers:
        return False
    # A job names its claimer "<celery hostname> <pid>" (services.this_worker); a heartbeat the
    # hostname. One query for all of them.
    since_start = Q()
    for worker in workers:
        since_start |= Q(worker__startswith=f"{worker.name} ", finished_at__gte=worker.started_at)
    return not InferenceJob.objects.filter(since_start).exclude(pk=job.pk).exists()
