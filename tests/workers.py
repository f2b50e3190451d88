"""Real Celery workers and a private Redis server for the integration tests.

Everything here starts real processes, each in its own session (process group), so a test can
kill a worker together with its pool children and embedded beat the way a crashed machine
would, and a fixture's teardown can always end whatever it started. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import kombu.pools
import redis
from celery import Celery
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from kombu import Connection
from rest_framework.test import APIClient

from accounts.models import User
from diagnosis.models import Case, InferenceJob
from tests.factories import CaseFactory, PatientFactory

ROOT = Path(__file__).resolve().parents[1]
CELERY = Path(sys.executable).with_name("celery")
REDIS_SERVER = "redis-server"

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    log: Callable[[], str] | None = None,
) -> T:
    """Poll until predicate() is truthy; fail with `what` (and a log tail) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log()[-6000:] if log else ""
            raise AssertionError(
                f"Timed out after {timeout:.0f} s waiting for {what}" + (f"\n--- log ---\n{tail}" if tail else "")
            )
        time.sleep(interval)


def _kill_group(process: subprocess.Popen, sig: int, *, timeout: float) -> None:
    """Send sig to the whole process group and wait (bounded) until every member is gone."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        process.poll()  # reap the leader if it is a zombie of ours
        return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, signal.SIGKILL if sig == signal.SIGKILL else 0)
        except ProcessLookupError:
            return  # no member left
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url_for_tests() -> str:
    """A DATABASE_URL for the database this test session runs on (test_<name>, not <name>)."""
    db = settings.DATABASES["default"]
    assert db["ENGINE"] == "django.db.backends.postgresql", "worker tests need PostgreSQL"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@contextmanager
def results_held() -> Iterator[None]:
    """Hold every worker at the point where it stores a job's results, until the block ends.

    Another connection holds the predictions table in SHARE mode: readers go on, but the store's
    INSERT waits, inside the transaction that also locked the job row. A job then stays claimed and
    running for as long as a test needs to kill its worker there; with models preloaded and tiny,
    the whole run takes a few milliseconds, and a kill timed by polling could land after the commit.
    """
    import psycopg2

    from diagnosis.models import Prediction

    db = settings.DATABASES["default"]
    holder = psycopg2.connect(
        dbname=db["NAME"],
        user=db["USER"],
        password=db.get("PASSWORD") or None,
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
    )
    try:
        with holder.cursor() as cursor:
            cursor.execute(f'LOCK TABLE "{Prediction._meta.db_table}" IN SHARE MODE')
        yield
    finally:
        holder.rollback()
        holder.close()


# Redis -----------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """A private redis-server on its own port: tests may stop it without touching the shared one."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, timeout: float = 10) -> RedisServer:
        assert self.process is None, "already running"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", str(self.folder)],
            stdout=(self.folder / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self.ping, timeout=timeout, what=f"redis-server on port {self.port}", log=self.log)
        return self

    def ping(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"redis-server exited with {self.process.returncode}:\n{self.log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            _kill_group(self.process, signal.SIGKILL, timeout=10)
            self.process = None

    def log(self) -> str:
        path = self.folder / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


# Celery workers --------------------------------------------------------------------------


@dataclass
class Worker:
    """One `celery worker` process (prefork, one child) with its log file."""

    process: subprocess.Popen
    log_file: Path
    name: str

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def wait_ready(self, *, timeout: float = 60) -> Worker:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()[-6000:]}")
            return f"{self.name} ready." in self.log()

        wait_for(ready, timeout=timeout, what=f"worker {self.name} to be ready", log=self.log)
        return self

    def kill(self) -> None:
        """SIGKILL the worker, its pool children and its embedded beat: a crash, no clean-up."""
        _kill_group(self.process, signal.SIGKILL, timeout=10)

    def stop(self) -> None:
        """Warm shutdown if it comes quickly, else SIGKILL; safe to call twice."""
        if self.process.poll() is None:
            _kill_group(self.process, signal.SIGTERM, timeout=10)
        _kill_group(self.process, signal.SIGKILL, timeout=5)


def start_worker(
    folder: Path,
    *,
    broker_url: str,
    model_dir: Path,
    media_root: Path,
    beat: bool = False,
    env: dict[str, str] | None = None,
    concurrency: int = 1,
) -> Worker:
    """Start `celery -A xnet_site worker` on the test database; wait_ready() before relying on it."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"xnet-test-{uuid.uuid4().hex[:8]}@localhost"
    worker_env = {
        **os.environ,
        "DATABASE_URL": database_url_for_tests(),
        "CELERY_BROKER_URL": broker_url,
        "XNET_MODEL_DIR": str(model_dir),
        "XNET_MEDIA_ROOT": str(media_root),
        "XNET_VAR_DIR": str(folder / "var"),  # beat's schedule file goes here
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    command = [str(CELERY), "-A", "xnet_site", "worker", "-Q", "xray,ct,maintenance,dicom", "-c", str(concurrency)]
    command += ["--pool", "prefork", "-l", "info", "-n", name, "--without-gossip", "--without-mingle"]
    if beat:
        command += ["-B", "-s", str(folder / "celerybeat-schedule")]
    log_file = folder / f"worker-{name.split('@')[0]}.log"
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=worker_env,
        stdin=subprocess.DEVNULL,
        stdout=log_file.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Worker(process=process, log_file=log_file, name=name)


class WorkerPool:
    """Workers a test started, all stopped on exit however the test ended.

    Workers share the test's broker (CELERY_BROKER_URL) unless told otherwise; that Redis
    database is emptied on entry and exit, so a message an earlier run left behind (say, from
    a killed worker) never reaches this run's fresh test database, whose ids start again at 1.
    """

    def __init__(self, folder: Path, *, model_dir: Path) -> None:
        self.folder = folder
        self.model_dir = model_dir
        self.broker_url = settings.CELERY_BROKER_URL
        self.workers: list[Worker] = []

    def __enter__(self) -> WorkerPool:
        flush_broker(self.broker_url)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for worker in self.workers:
            worker.stop()
        flush_broker(self.broker_url)

    def start(
        self,
        *,
        model_dir: Path | None = None,
        broker_url: str | None = None,
        beat: bool = False,
        env: dict[str, str] | None = None,
        ready: bool = True,
    ) -> Worker:
        worker = start_worker(
            self.folder,
            broker_url=broker_url or self.broker_url,
            model_dir=model_dir or self.model_dir,
            media_root=Path(settings.MEDIA_ROOT),
            beat=beat,
            env=env,
        )
        self.workers.append(worker)
        return worker.wait_ready() if ready else worker


def flush_broker(url: str) -> None:
    """Drop messages earlier runs left in this broker database (queues and unacked hash)."""
    assert url.startswith("redis://"), f"worker tests need a Redis broker, not {url}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def _drop_broker_connections(app: Celery) -> None:
    kombu.pools.reset()  # closes every pooled connection and empties kombu's global pool groups
    app._pool = None
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None


@contextmanager
def broker_switched_to(url: str) -> Iterator[None]:
    """Publish from this process to another broker for a while, then switch back.

    Celery reads CELERY_BROKER_URL from the environment before its own configuration, and
    caches a connection pool (app.pool) and a producer pool (app.amqp.producer_pool) that
    kombu keeps in its global pool groups too: all of them must go, or the next publish
    reuses a connection to the old broker.
    """
    from xnet_site.celery import app

    original = os.environ.get("CELERY_BROKER_URL")
    os.environ["CELERY_BROKER_URL"] = url
    app.conf.broker_url = url
    _drop_broker_connections(app)
    assert app.pool.connection.as_uri() == Connection(url).as_uri()
    try:
        yield
    finally:
        if original is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = original
        app.conf.broker_url = original or settings.CELERY_BROKER_URL
        _drop_broker_connections(app)


def received_task_ids(log: str) -> list[str]:
    """Ids of the inference tasks a worker log says it received, in order."""
    return re.findall(r"Task diagnosis\.tasks\.run_inference_job\[([\w-]+)\] received", log)


def redeliver_unacked(broker_url: str, task_id: str) -> bool:
    """Put a dead worker's unacknowledged message back on its queue now; False if there is none.

    A live worker does this itself, with kombu's own restore, for messages older than the
    visibility timeout, but it scans only every 100 s (unacked_restore_interval x throttle);
    calling the same restore here lets a test see the duplicate delivery without that wait.
    """
    with Connection(broker_url) as connection:
        channel = connection.default_channel
        client = channel.client
        for tag, payload in client.hgetall(channel.unacked_key).items():
            message, _exchange, _routing_key = json.loads(payload)
            if message["headers"].get("id") == task_id:
                channel.qos.restore_by_tag(tag, client)
                return True
    return False


# What every worker test does through the public API --------------------------------------


def case_for(user: User, modality: str) -> Case:
    patient = PatientFactory(department=user.department, created_by=user)
    return CaseFactory(patient=patient, created_by=user, modality=modality)


def api_upload(api: APIClient, case: Case, data: bytes) -> dict:
    """POST one image as the contract says; returns the 202 body ({"image": .., "job": ..})."""
    response = api.post(
        f"/api/v1/cases/{case.pk}/images/",
        {"file": SimpleUploadedFile("chest.jpg", data, content_type="image/jpeg")},
        format="multipart",
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["job"]["status"] == "pending"
    assert response["Location"] == body["job"]["url"]
    return body


def finished_job(job_id: int) -> InferenceJob | None:
    job = InferenceJob.objects.get(pk=job_id)
    return job if job.is_finished else None


# Fault injection ---------------------------------------------------------------------------


def poison_jpeg_bytes(source: bytes) -> bytes:
    """`source` (a real chest radiograph) re-saved as a greyscale JPEG with a malformed EXIF block.

    Orientation 6 (rotate) plus an ImageWidth tag stored as a negative signed short: Pillow
    decodes the pixels fine, and PIL.ImageOps.exif_transpose raises struct.error when it writes
    the EXIF block back after rotating. This is the file that failed whole batches in the worker.
    """
    import io
    import struct

    from PIL import Image as PILImage

    entries = [
        (0x0112, 3, 1, struct.pack("<HH", 6, 0)),  # Orientation: SHORT 6
        (0x0100, 8, 1, struct.pack("<hH", -5, 0)),  # ImageWidth: SSHORT -5, out of range when re-packed
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHI", tag, kind, count) + value
    exif = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)
    with PILImage.open(io.BytesIO(source)) as image:
        grey = image.convert("L")
    buffer = io.BytesIO()
    grey.save(buffer, format="JPEG", quality=90, exif=exif)
    return buffer.getvalue()
