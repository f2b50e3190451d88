"""Celery tasks of the "dicom" queue: thin, the work is in dicomnet.delivery."""

from __future__ import annotations

from celery import shared_task

from dicomnet import delivery


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=None)
def deliver(self, delivery_id: int) -> None:
    """Send one delivery; on failure retry later with backoff (the delay comes from the row's
    attempt count, so a duplicate message or a resend does not shorten it)."""
    delay = delivery.run(delivery_id=delivery_id)
    if delay is not None:
        raise self.retry(countdown=delay, max_retries=None)


@shared_task(ignore_result=True)
def requeue_deliveries() -> int:
    """Beat's sweeper for deliveries whose message was lost (see services.deliveries_requeue)."""
    from dicomnet.services import deliveries_requeue

    return deliveries_requeue()
