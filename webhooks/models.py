"""Webhook subscriptions (per department) and their deliveries (one row per event and URL).

The secret is kept in clear: the HMAC signature needs it at every delivery, so it cannot be
hashed like an API token. It is shown once, when the subscription is created, and never again
on a page or in the API; whoever reads the database reads it (as for any HMAC webhook sender).
"""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import Department


class Event(models.TextChoices):
    JOB_FINISHED = "job.finished", "An AI job finished (succeeded, failed or rejected)"
    REPORT_SIGNED = "report.signed", "A report was signed"


class Subscription(models.Model):
    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="webhook_subscriptions")
    url = models.URLField(max_length=500)
    events = models.JSONField(default=list, help_text="event names, e.g. ['job.finished', 'report.signed']")
    description = models.CharField(max_length=200, blank=True)
    secret = models.CharField(max_length=100, editable=False)
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    deactivated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Webhook {self.pk} -> {self.url}"

    @staticmethod
    def new_secret() -> str:
        return "whsec_" + secrets.token_urlsafe(32)


class Delivery(models.Model):
    """One event for one subscription. Its id is the delivery id sent as X-XNET-Delivery and in
    the body: a receiver that sees an id twice (a retry after a lost answer) ignores the copy."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RETRYING = "retrying", "Retrying"
        SUCCEEDED = "succeeded", "Delivered"
        FAILED = "failed", "Gave up"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="deliveries")
    event = models.CharField(max_length=32, choices=Event.choices)
    # What the event is about ("job:12", "report:3"): one delivery per subscription, event and object.
    object_key = models.CharField(max_length=64)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["subscription", "event", "object_key"], name="one_delivery_per_event"),
        ]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"{self.event} {self.object_key} -> {self.subscription_id} ({self.status})"

    @property
    def is_done(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED)
