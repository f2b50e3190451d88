"""Results and signatures start deliveries: diagnosis and reviews announce, this app listens.

Deferred to commit: a result or a signature that rolls back sends nothing.
"""

from __future__ import annotations

from functools import partial

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from diagnosis.models import Prediction
from dicomnet import services
from reviews.signals import report_signed


@receiver(post_save, sender=Prediction)
def prediction_stored(sender, instance: Prediction, created: bool = False, **kwargs) -> None:
    if created:
        transaction.on_commit(partial(_for_prediction, instance.pk), robust=True)


def _for_prediction(prediction_id: int) -> None:
    with transaction.atomic():
        services.deliveries_for_prediction(prediction_id=prediction_id)


@receiver(report_signed)
def report_was_signed(sender, report, **kwargs) -> None:
    transaction.on_commit(partial(_for_report, report.pk), robust=True)


def _for_report(report_id: int) -> None:
    with transaction.atomic():
        services.deliveries_for_report(report_id=report_id)
