"""Heartbeats: the last time each worker and the beat scheduler said it was alive."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Heartbeat(models.Model):
    """One row per worker (its Celery hostname) and one for beat, refreshed every few seconds.

    Stored in the database because every process can reach it, whatever the broker, and the
    sweeper that re-queues a dead worker's jobs already runs there.
    """

    class Kind(models.TextChoices):
        WORKER = "worker", "Worker"
        BEAT = "beat", "Beat scheduler"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    name = models.CharField(max_length=255, unique=True, help_text="Celery hostname of a worker, or 'beat'")
    queues = models.JSONField(default=list, blank=True, help_text="queues a worker consumes")
    pid = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now, help_text="when this process started")
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["kind", "name"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.name}"
