"""Reads of heartbeats: which workers are lost, and what the dashboard should warn about."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from health.models import Heartbeat

BEAT = "beat"


def queue_names() -> list[str]:
    return [queue.name for queue in settings.CELERY_TASK_QUEUES]


def lost_worker_names(*, now: datetime | None = None) -> set[str]:
    """Workers that reported once and then fell silent for XNET_WORKER_LOST_AFTER seconds: dead
    (killed, machine gone), since a live one beats every XNET_HEARTBEAT_INTERVAL seconds."""
    now = now or timezone.now()
    silent_since = now - timedelta(seconds=settings.XNET_WORKER_LOST_AFTER)
    return set(
        Heartbeat.objects.filter(kind=Heartbeat.Kind.WORKER, last_seen__lt=silent_since).values_list("name", flat=True)
    )


def live_workers_by_queue(*, now: datetime | None = None) -> dict[str, list[str]]:
    """Queue name -> names of the workers consuming it that beat recently (every queue listed)."""
    now = now or timezone.now()
    alive_since = now - timedelta(seconds=settings.XNET_WORKER_LOST_AFTER)
    live: dict[str, list[str]] = {name: [] for name in queue_names()}
    for heartbeat in Heartbeat.objects.filter(kind=Heartbeat.Kind.WORKER, last_seen__gte=alive_since):
        for queue in heartbeat.queues:
            live.setdefault(queue, []).append(heartbeat.name)
    return live


def beat_last_seen() -> datetime | None:
    return Heartbeat.objects.filter(kind=Heartbeat.Kind.BEAT).values_list("last_seen", flat=True).first()


def beat_silent(*, seen: datetime | None, now: datetime | None = None) -> bool:
    """No beat heartbeat within XNET_BEAT_SILENT_AFTER; `seen` is beat_last_seen()."""
    now = now or timezone.now()
    return seen is None or seen < now - timedelta(seconds=settings.XNET_BEAT_SILENT_AFTER)


@dataclass(frozen=True)
class Warning:
    code: str
    message: str


def silence_warnings(*, now: datetime | None = None) -> list[Warning]:
    """What an operator must know: beat or every worker of a queue has stopped reporting."""
    now = now or timezone.now()
    warnings = []
    seen = beat_last_seen()
    if beat_silent(now=now, seen=seen):
        since = f"since {timezone.localtime(seen):%Y-%m-%d %H:%M}" if seen else "ever"
        warnings.append(
            Warning(
                "beat_silent",
                f"The beat scheduler has not reported {since}: periodic tasks are not sent. Workers still re-queue "
                "stranded jobs themselves, but start beat again.",
            )
        )
    for queue, workers in live_workers_by_queue(now=now).items():
        if not workers:
            warnings.append(
                Warning(
                    "no_worker",
                    f"No worker of the {queue} queue has reported in the last {settings.XNET_WORKER_LOST_AFTER} s: "
                    f"its jobs wait until one runs again.",
                )
            )
    return warnings


def live_workers(*, queue: str, now: datetime | None = None) -> list[Heartbeat]:
    """The workers consuming `queue` that beat recently, with when each process started."""
    now = now or timezone.now()
    alive_since = now - timedelta(seconds=settings.XNET_WORKER_LOST_AFTER)
    beating = Heartbeat.objects.filter(kind=Heartbeat.Kind.WORKER, last_seen__gte=alive_since)
    return [heartbeat for heartbeat in beating if queue in heartbeat.queues]
