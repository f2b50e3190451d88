"""Celery task: the daily drift check (beat entry "check-model-drift" in settings)."""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from modelops import services


@shared_task(acks_late=True, autoretry_for=(OperationalError, InterfaceError), retry_backoff=30, max_retries=3)
def check_drift() -> int:
    """Idempotent (one alarm per version, department and week), so a redelivery is harmless."""
    return len(services.drift_check())
