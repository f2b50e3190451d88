"""Results and signatures start deliveries: diagnosis and reviews announce, this app listens.

Deferred to commit: a result or a signature that rolls back sends nothing. Each first asks, in
one query, whether the department has an enabled destination node: most have none, and the
worker's store should not load a result for nobody (issue 11).
"""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from diagnosis.models import Prediction
from dicomnet import services
from reviews.signals import report_signed


@receiver(post_save, sender=Prediction)
def prediction_stored(sender, instance: Prediction, created: bool = False, **kwargs) -> None:
    if created:
        # The worker's prediction carries its job, image, case and patient: no join at commit.
        department_id = instance.job.loaded_department_id() if Prediction.job.is_cached(instance) else None
        transaction.on_commit(lambda pk=instance.pk: _for_prediction(pk, department_id), robust=True)


def has_destination(**department_of) -> bool:
    """Whether the department reached by `department_of` (a lookup from Department) has a node
    that results are sent to: one query, read at commit."""
    lookup = {f"department__{path}": value for path, value in department_of.items()}
    return services.destination_nodes().filter(**lookup).exists()


def _for_prediction(prediction_id: int, department_id: int | None = None) -> None:
    if department_id:
        department_of = {"id": department_id}
    else:
        department_of = {"patients__cases__images__jobs__prediction": prediction_id}
    if not has_destination(**department_of):
        return
    with transaction.atomic():
        services.deliveries_for_prediction(prediction_id=prediction_id)


@receiver(report_signed)
def report_was_signed(sender, report, **kwargs) -> None:
    transaction.on_commit(lambda pk=report.pk: _for_report(pk), robust=True)


def _for_report(report_id: int) -> None:
    if not has_destination(patients__cases__report=report_id):
        return
    with transaction.atomic():
        services.deliveries_for_report(report_id=report_id)
