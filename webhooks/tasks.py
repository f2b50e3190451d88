"""Thin Celery tasks for webhook deliveries (see webhooks/services.py for the rules)."""

from __future__ import annotations

from celery import shared_task

from webhooks import services


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=None)
def deliver_webhook(self, delivery_id: str) -> None:
    """One attempt; a failed one is retried by Celery after the delivery's backoff. The attempt
    count and the limit live on the row, so Celery's own retry count is not the limit."""
    delay = services.delivery_attempt(delivery_id=delivery_id)
    if delay is not None:
        raise self.retry(countdown=delay, max_retries=None)


@shared_task(acks_late=True, ignore_result=True)
def sweep_webhook_deliveries() -> int:
    return services.deliveries_sweep()
