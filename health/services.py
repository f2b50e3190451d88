"""Heartbeat writes: a worker every XNET_HEARTBEAT_INTERVAL seconds, beat whenever it publishes."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from django.db import connections
from django.utils import timezone

from health.models import Heartbeat

logger = logging.getLogger(__name__)

PRUNE_AFTER = timedelta(days=1)


def heartbeat_record(
    *, kind: str, name: str, queues: Iterable[str] = (), started_at: datetime | None = None
) -> Heartbeat:
    """Say that this process is alive now (one row per name, updated in place)."""
    defaults: dict = {"kind": kind, "queues": sorted(queues), "pid": os.getpid(), "last_seen": timezone.now()}
    if started_at is not None:
        defaults["started_at"] = started_at
    heartbeat, _ = Heartbeat.objects.update_or_create(name=name, defaults=defaults)
    return heartbeat


def heartbeat_forget(*, name: str) -> None:
    """A worker that stops cleanly leaves no heartbeat behind to be mistaken for a dead one."""
    Heartbeat.objects.filter(name=name).delete()


def heartbeats_prune(*, now: datetime | None = None) -> int:
    """Forget workers silent for a day (renamed, scaled down): by then any job they held is past
    XNET_JOB_STALE_AFTER, and the sweeper need not look for them by name any more."""
    now = now or timezone.now()
    deleted, _ = Heartbeat.objects.filter(kind=Heartbeat.Kind.WORKER, last_seen__lt=now - PRUNE_AFTER).delete()
    return deleted


class HeartbeatThread(threading.Thread):
    """A worker's heartbeat, in a daemon thread of the worker's main process.

    A thread, not the worker's event loop: a database that does not answer must not stop the
    worker from consuming messages. Each beat records the heartbeat, then runs `on_beat`
    (the job sweeper); errors are logged and the next beat tries again.
    """

    def __init__(
        self, *, name: str, queues: Iterable[str], interval: float, on_beat: Callable[[], object] | None = None
    ) -> None:
        super().__init__(name=f"xnet-heartbeat-{name}", daemon=True)
        self.worker_name = name
        self.queues = list(queues)
        self.interval = interval
        self.on_beat = on_beat
        self.started = timezone.now()
        self._stopping = threading.Event()

    def run(self) -> None:
        while True:
            self.beat()
            if self._stopping.wait(self.interval):
                return

    def beat(self) -> None:
        try:
            heartbeat_record(
                kind=Heartbeat.Kind.WORKER, name=self.worker_name, queues=self.queues, started_at=self.started
            )
            heartbeats_prune()
            if self.on_beat is not None:
                self.on_beat()
        except Exception:
            logger.exception("Worker heartbeat of %s failed; retrying in %s s", self.worker_name, self.interval)
        finally:
            connections.close_all()  # a fresh connection each beat survives a database restart

    def stop(self, *, timeout: float = 5) -> None:
        self._stopping.set()
        self.join(timeout=timeout)
        try:
            heartbeat_forget(name=self.worker_name)
        except Exception:
            logger.exception("Could not remove the heartbeat of %s", self.worker_name)
        finally:
            connections.close_all()
