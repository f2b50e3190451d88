"""GET /healthz: is every part XNET needs alive? JSON for a load balancer or monitoring.

200 when every check passes, 503 (with Retry-After) when one fails; each check says why. No
login: it names no patient and no user, only counts, queue names and worker names.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from health import selectors


def _database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True}


def _broker() -> dict:
    from xnet_site.celery import app

    try:
        with app.connection_for_write(connect_timeout=settings.XNET_HEALTH_BROKER_TIMEOUT) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=settings.XNET_HEALTH_BROKER_TIMEOUT)
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True}


def _workers(now: datetime) -> dict:
    try:
        live = selectors.live_workers_by_queue(now=now)
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}
    silent = sorted(queue for queue, names in live.items() if not names)
    return {"ok": not silent, "queues": {queue: len(names) for queue, names in live.items()}, "silent_queues": silent}


def _beat(now: datetime) -> dict:
    try:
        seen = selectors.beat_last_seen()
        silent = selectors.beat_silent(now=now, seen=seen)
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": not silent, "last_seen": seen.isoformat() if seen else None}


def _disk() -> dict:
    path = Path(settings.MEDIA_ROOT)
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    free_mb = usage.free // (1024 * 1024)
    return {
        "ok": free_mb >= settings.XNET_MIN_FREE_DISK_MB,
        "free_mb": free_mb,
        "min_free_mb": settings.XNET_MIN_FREE_DISK_MB,
    }


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    now = timezone.now()
    checks = {
        "database": _database(),
        "broker": _broker(),
        "workers": _workers(now),
        "beat": _beat(now),
        "disk": _disk(),
    }
    healthy = all(check["ok"] for check in checks.values())
    response = JsonResponse(
        {"status": "ok" if healthy else "failing", "checks": checks}, status=200 if healthy else 503
    )
    if not healthy:
        response["Retry-After"] = str(settings.XNET_HEARTBEAT_INTERVAL)
    return response
