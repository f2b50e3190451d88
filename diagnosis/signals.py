"""Keep each case's reading order (Case.waiting_since, lead_label, lead_probability) current.

Receivers rather than calls in each service: images, jobs and predictions are saved by uploads,
the worker, the sweeper, the admin and test factories alike, and the worklist must never show a
stale order. Queryset .update() calls bypass these; none of them changes what the order uses.
"""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save
from django.dispatch import Signal, receiver

from diagnosis.models import Case, Image, InferenceJob, Prediction

# Sent by services.image_withdraw inside its transaction, with image, user and reason: the audit
# app (which builds on this one) records it, so diagnosis needs no import of audit.
image_withdrawn = Signal()
# Sent by services.job_retry inside its transaction, with job (the failed one), retry and user.
job_retried = Signal()


def _refresh(case_id: int | None) -> None:
    if case_id is not None:
        case = Case.objects.filter(pk=case_id).first()
        if case is not None:
            case.refresh_reading_order()


@receiver([post_save, post_delete], sender=Image)
def image_saved(sender, instance: Image, **kwargs) -> None:
    _refresh(instance.case_id)


@receiver([post_save, post_delete], sender=InferenceJob)
def job_saved(sender, instance: InferenceJob, created: bool = False, **kwargs) -> None:
    # Claiming (pending -> running) and releasing (running -> pending) change neither which job is
    # an image's latest nor any result: skip them, they are the worker's hot path.
    if not created and kwargs.get("signal") is post_save and not instance.is_finished:
        return
    _refresh(Image.objects.filter(pk=instance.image_id).values_list("case_id", flat=True).first())


@receiver([post_save, post_delete], sender=Prediction)
def prediction_saved(sender, instance: Prediction, **kwargs) -> None:
    _refresh(Image.objects.filter(jobs=instance.job_id).values_list("case_id", flat=True).first())
