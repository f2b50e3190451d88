"""Receivers: a finished job (diagnosis) and a signed report (reviews) become webhook deliveries.

Both act on commit (transaction.on_commit, robust: a webhook failure never fails the worker's job
or the signature), so nothing is sent for work that rolls back.
"""

from __future__ import annotations

from functools import partial

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from diagnosis.models import InferenceJob
from reviews.signals import report_signed
from webhooks import events


@receiver(post_save, sender=InferenceJob, dispatch_uid="webhooks_job_finished")
def job_saved(sender, instance: InferenceJob, created: bool = False, raw: bool = False, **kwargs) -> None:
    if raw or not instance.is_finished:
        return
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and "status" not in update_fields:
        return  # a finished job saved again for another field: the event went out already
    transaction.on_commit(partial(events.job_finished, instance.pk), robust=True)


@receiver(report_signed, dispatch_uid="webhooks_report_signed")
def report_was_signed(sender, report, **kwargs) -> None:
    transaction.on_commit(partial(events.report_signed, report.pk), robust=True)
