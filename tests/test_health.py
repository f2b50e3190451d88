"""GET /healthz and the dashboard's warning when beat or every worker of a queue is silent."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from health.models import Heartbeat
from health.selectors import BEAT
from health.services import PRUNE_AFTER, heartbeat_record, heartbeats_prune
from tests.workers import RedisServer, WorkerPool, broker_switched_to, free_port, wait_for

pytestmark = pytest.mark.django_db

# Every queue the settings declare: a worker of the embedded defaults consumes them all.
QUEUES = [queue.name for queue in django_settings.CELERY_TASK_QUEUES]


@pytest.fixture
def everything_alive(settings):
    settings.XNET_MIN_FREE_DISK_MB = 0
    heartbeat_record(kind=Heartbeat.Kind.WORKER, name="w1@host", queues=QUEUES)
    heartbeat_record(kind=Heartbeat.Kind.BEAT, name=BEAT)


def _silence(name: str, seconds: float) -> None:
    Heartbeat.objects.filter(name=name).update(last_seen=timezone.now() - timedelta(seconds=seconds))


def test_healthz_is_200_when_every_part_answers(client, everything_alive):
    response = client.get("/healthz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "workers", "beat", "disk"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["workers"]["queues"] == dict.fromkeys(QUEUES, 1)
    assert "no-store" in response["Cache-Control"]


def test_healthz_is_503_naming_silent_workers_and_beat(client, everything_alive, settings):
    heartbeat_record(kind=Heartbeat.Kind.WORKER, name="ct-only@host", queues=["ct"])
    _silence("w1@host", settings.XNET_WORKER_LOST_AFTER + 1)
    _silence(BEAT, settings.XNET_BEAT_SILENT_AFTER + 1)

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response["Retry-After"] == str(settings.XNET_HEARTBEAT_INTERVAL)
    checks = response.json()["checks"]
    assert checks["workers"]["silent_queues"] == sorted(set(QUEUES) - {"ct"})
    assert checks["beat"]["ok"] is False
    assert (checks["database"]["ok"], checks["broker"]["ok"], checks["disk"]["ok"]) == (True, True, True)


def test_healthz_is_503_when_the_broker_is_down(client, everything_alive):
    with broker_switched_to(f"redis://127.0.0.1:{free_port()}/0"):  # nothing listens there
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == {"ok": False, "error": "OperationalError"}


def test_healthz_is_503_when_the_disk_is_nearly_full(client, everything_alive, settings):
    settings.XNET_MIN_FREE_DISK_MB = 10**9  # more than any disk here has free
    response = client.get("/healthz")
    assert response.status_code == 503
    disk = response.json()["checks"]["disk"]
    assert disk["ok"] is False
    assert disk["free_mb"] < disk["min_free_mb"]


def test_dashboard_warns_when_beat_or_every_worker_of_a_queue_is_silent(rad_client, everything_alive, settings):
    page = rad_client.get("/audit/dashboard/").content.decode()
    assert "service-warning" not in page

    _silence("w1@host", settings.XNET_WORKER_LOST_AFTER + 1)
    _silence(BEAT, settings.XNET_BEAT_SILENT_AFTER + 1)
    page = rad_client.get("/audit/dashboard/").content.decode()
    assert page.count('class="alert alert-error service-warning"') == 1 + len(QUEUES)  # beat + each queue
    assert "The beat scheduler has not reported since" in page
    assert "No worker of the xray queue has reported" in page


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_and_beat_report_in_and_out(client, tmp_path, model_dir, settings):
    """A worker with embedded beat: both heartbeats appear, /healthz is 200; a warm shutdown
    removes the worker's heartbeat, so it is not mistaken for a dead one."""
    settings.XNET_MIN_FREE_DISK_MB = 0
    redis_server = RedisServer(tmp_path / "redis").start()
    try:
        with broker_switched_to(redis_server.url), WorkerPool(tmp_path / "workers", model_dir=model_dir) as pool:
            pool.broker_url = redis_server.url
            worker = pool.start(beat=True, env={"XNET_HEARTBEAT_INTERVAL": "1", "XNET_SWEEP_INTERVAL": "1"})
            beats = partial(Heartbeat.objects.filter(name__in=[worker.name, BEAT]).count)
            wait_for(lambda: beats() == 2, timeout=60, what="worker and beat heartbeats", log=worker.log)
            row = Heartbeat.objects.get(name=worker.name)
            assert sorted(row.queues) == sorted(QUEUES)
            response = client.get("/healthz")
            assert response.status_code == 200, response.content
            worker.stop()
            assert not Heartbeat.objects.filter(name=worker.name).exists()
    finally:
        redis_server.stop()


def test_workers_silent_for_a_day_are_forgotten():
    heartbeat_record(kind=Heartbeat.Kind.WORKER, name="gone@old", queues=QUEUES)
    heartbeat_record(kind=Heartbeat.Kind.WORKER, name="quiet@host", queues=QUEUES)
    heartbeat_record(kind=Heartbeat.Kind.BEAT, name=BEAT)
    _silence("gone@old", PRUNE_AFTER.total_seconds() + 1)
    _silence("quiet@host", PRUNE_AFTER.total_seconds() - 60)
    _silence(BEAT, PRUNE_AFTER.total_seconds() + 1)
    assert heartbeats_prune() == 1
    assert set(Heartbeat.objects.values_list("name", flat=True)) == {"quiet@host", BEAT}
