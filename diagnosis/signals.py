"""Keep each case's reading order (Case.waiting_since, lead_label, lead_probability) current.

Receivers rather than calls in each service: images, jobs and predictions are saved by uploads,
the worker, the sweeper, the admin and test factories alike, and the worklist must never show a
stale order. Queryset .update() calls bypass these; none of them changes what the order uses.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from celery.signals import worker_ready
from django.db.models.signals import post_delete, post_save
from django.dispatch import Signal, receiver

from accounts.models import Department
from diagnosis.models import Case, Image, InferenceJob, Prediction

# Sent by services.image_withdraw inside its transaction, with image, user and reason: the audit
# app (which builds on this one) records it, so diagnosis needs no import of audit.
image_withdrawn = Signal()
# Sent by services.job_retry inside its transaction, with job (the failed one), retry and user.
job_retried = Signal()
# Sent by model_status.deployment_set_status inside its transaction, with deployment, change (the
# ModelStatusChange row) and user (None for a command): audit records it.
model_status_changed = Signal()


_deferred = threading.local()


@contextmanager
def reading_order_once() -> Iterator[None]:
    """Inside (a transaction): saves note their case instead of refreshing it; on leaving
    without an error each case is refreshed once, in id order (the order the case row locks are
    taken, so two workers cannot deadlock). The worker stores a batch with this: a prediction
    and its job's status used to refresh the same case twice per image."""
    if getattr(_deferred, "cases", None) is not None:
        yield  # nested: the outer block refreshes
        return
    cases: dict[int, Case | None] = {}
    _deferred.cases = cases
    try:
        yield
    finally:
        _deferred.cases = None
    for case_id in sorted(cases):
        _refresh(case_id, cases[case_id])


def _refresh(case_id: int | None, case: Case | None = None) -> None:
    if case_id is None:
        return
    deferred = getattr(_deferred, "cases", None)
    if deferred is not None:
        deferred[case_id] = deferred.get(case_id) or case
        return
    if case is None:
        case = Case.objects.filter(pk=case_id).first()
    if case is not None:
        case.refresh_reading_order()


def _case_of_job(job: InferenceJob) -> tuple[int | None, Case | None]:
    """The job's case id (and the case when loaded already): no query on the worker's path,
    whose jobs come with image and case."""
    if InferenceJob.image.is_cached(job):
        image = job.image
        return image.case_id, image.case if Image.case.is_cached(image) else None
    return Image.objects.filter(pk=job.image_id).values_list("case_id", flat=True).first(), None


@receiver([post_save, post_delete], sender=Image)
def image_saved(sender, instance: Image, **kwargs) -> None:
    _refresh(instance.case_id)


@receiver([post_save, post_delete], sender=InferenceJob)
def job_saved(sender, instance: InferenceJob, created: bool = False, **kwargs) -> None:
    # Claiming (pending -> running) and releasing (running -> pending) change neither which job is
    # an image's latest nor any result: skip them, they are the worker's hot path.
    if not created and kwargs.get("signal") is post_save and not instance.is_finished:
        return
    _refresh(*_case_of_job(instance))


@receiver([post_save, post_delete], sender=Prediction)
def prediction_saved(sender, instance: Prediction, **kwargs) -> None:
    if Prediction.job.is_cached(instance):
        _refresh(*_case_of_job(instance.job))
    else:
        _refresh(Image.objects.filter(jobs=instance.job_id).values_list("case_id", flat=True).first())


@receiver(post_save, sender=Department, dispatch_uid="diagnosis_department_models")
def department_created(sender, instance: Department, created: bool, raw: bool = False, **kwargs) -> None:
    """A new department gets a deployment row for every installed model version (silent unless
    the site admin set otherwise), as departments that existed at the last sync have."""
    if created and not raw:
        from diagnosis.model_status import deployments_sync

        deployments_sync(departments=[instance])


@worker_ready.connect(dispatch_uid="diagnosis_worker_sync_models")
def worker_started(sender=None, **kwargs) -> None:
    """A worker starting with a newly installed model folder gives it deployment rows (silent
    unless set otherwise) before it takes uploads' jobs; the worker's jobs name their model."""
    from diagnosis.model_status import deployments_sync

    try:
        deployments_sync()
    except Exception:  # a database outage must not stop the worker from starting
        import logging

        logging.getLogger(__name__).exception("Model deployments could not be synced at worker start")


def refresh_cases_of_model(*, department_id: int, model_name: str, model_version: str) -> int:
    """Recompute the reading order of the department's unsigned cases holding a result of this
    model version: its status changed, so whether that result orders the worklist changed too.
    Every case holding one, signed too, gets its latest shown job again, in one UPDATE."""
    Case.objects.filter(
        pk__in=Image.objects.filter(jobs__model_name=model_name, jobs__model_version=model_version).values("case_id")
    ).refresh_latest_jobs(department_id=department_id)
    case_ids = (
        Case.objects.filter(
            patient__department_id=department_id,
            report__isnull=True,
            images__jobs__model_name=model_name,
            images__jobs__model_version=model_version,
        )
        .values_list("pk", flat=True)
        .distinct()
    )
    ids = sorted(case_ids)
    for case in Case.objects.filter(pk__in=ids).order_by("pk"):
        case.refresh_reading_order()
    return len(ids)


@receiver(model_status_changed, dispatch_uid="diagnosis_model_status_reading_order")
def model_status_saved(sender, deployment, change, user, **kwargs) -> None:
    """After the status change commits: the worklist follows the new assistive model at once."""
    from django.db import transaction

    transaction.on_commit(
        lambda: refresh_cases_of_model(
            department_id=deployment.department_id,
            model_name=deployment.model_name,
            model_version=deployment.model_version,
        )
    )
