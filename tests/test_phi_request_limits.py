"""Request bodies are limited before the application reads them, and search terms stay out of
the web server's access log.

Before issue 10 an anonymous 200 MB multipart POST to the login page was read in full (the CSRF
check reads the form) and written to a temporary file. Now a Content-Length above the address's
limit is a 413 before a byte of the body is read: checked here on Django's own request handler
with a body that counts what is read, and end to end on gunicorn started with XNET's
configuration, which answers such a request before the body has even been sent.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, RequestFactory
from django.test.client import ClientHandler
from django.urls import reverse
from PIL import Image as PILImage

from diagnosis.models import Image
from tests.factories import CaseFactory, PatientFactory
from tests.workers import _kill_group, database_url_for_tests, free_port, wait_for
from xnet_site.security import UPLOAD_ROUTES

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024
BOUNDARY = "xnet-boundary"
CSRF_COOKIE = "a" * 32  # any well-formed token: an attacker gets one from the login page anyway


class CountingBody:
    """A multipart body of `size` bytes made on demand (nothing held in memory), counting how many
    bytes the server reads from it."""

    def __init__(self, size: int) -> None:
        self.head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        self.size = size
        self.read_bytes = 0

    def _byte(self, position: int) -> bytes:
        if position < len(self.head):
            return self.head[position : position + 1]
        from_end = self.size - position
        if from_end <= len(self.tail):
            return self.tail[len(self.tail) - from_end : len(self.tail) - from_end + 1]
        return b"x"

    def read(self, size: int = -1) -> bytes:
        remaining = self.size - self.read_bytes
        size = remaining if size is None or size < 0 else min(size, remaining)
        middle_start, middle_end = len(self.head), self.size - len(self.tail)
        start = self.read_bytes
        if middle_start <= start and start + size <= middle_end:
            chunk = b"x" * size
        else:
            chunk = b"".join(self._byte(p) for p in range(start, start + size))
        self.read_bytes += size
        return chunk

    def readline(self, size: int = -1) -> bytes:
        return self.read(size if size and size > 0 else 64 * 1024)


def send_raw(path: str, body: CountingBody, *, user=None, **extra) -> tuple[int, bytes]:
    """POST `body` through Django's request handler with the CSRF check enforced, as a browser
    or an attacker would (the test client skips that check, which is what reads the form)."""
    environ = RequestFactory()._base_environ(
        PATH_INFO=path,
        REQUEST_METHOD="POST",
        CONTENT_TYPE=f"multipart/form-data; boundary={BOUNDARY}",
        CONTENT_LENGTH=str(body.size),
        HTTP_COOKIE=f"csrftoken={CSRF_COOKIE}",
        **extra,
    )
    environ["wsgi.input"] = body
    if user is not None:
        client = Client()
        client.force_login(user)
        environ["HTTP_COOKIE"] += f"; sessionid={client.cookies['sessionid'].value}"
    response = ClientHandler(enforce_csrf_checks=True)(environ)
    return response.status_code, response.content


@pytest.fixture
def case(radiologist):
    return CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))


def noise_png(side: int) -> bytes:
    """A PNG that does not compress: side x side bytes and a little more."""
    pixels = np.random.default_rng(3).integers(0, 256, (side, side), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_routes_exist():
    """A renamed upload URL would silently get the small limit."""
    for name in UPLOAD_ROUTES:
        no_args = ("case_create", "api:case-from-dicom", "dicomweb-stow")
        args = [] if name in no_args else ["1.2.3"] if name == "dicomweb-stow-study" else [1]
        assert reverse(name, args=args)


def test_anonymous_200_mb_post_to_the_login_page_is_refused_unread(settings, tmp_path):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    body = CountingBody(200 * MB)
    status, content = send_raw(reverse("login"), body)
    assert status == 413
    assert body.read_bytes == 0
    assert list(tmp_path.iterdir()) == []
    assert b"Request too large" in content
    assert b"200.0 MB" in content


def test_anonymous_post_to_an_upload_page_gets_the_small_limit(case):
    body = CountingBody(6 * MB)
    status, _ = send_raw(reverse("case_upload", args=[case.pk]), body)
    assert (status, body.read_bytes) == (413, 0)


def test_signed_in_upload_above_the_request_limit_is_refused_unread(settings, radiologist, case):
    settings.XNET_MAX_UPLOAD_REQUEST_BYTES = 6 * MB
    body = CountingBody(7 * MB)
    status, _ = send_raw(reverse("case_upload", args=[case.pk]), body, user=radiologist)
    assert (status, body.read_bytes) == (413, 0)


def test_api_body_above_the_limit_is_a_json_413(api):
    body = CountingBody(6 * MB)
    status, content = send_raw("/api/v1/patients/", body)
    assert (status, body.read_bytes) == (413, 0)
    error = json.loads(content)["error"]
    assert (error["status"], error["code"]) == (413, "too_large")
    assert "limit" in error["message"]


def test_a_json_document_above_the_limit_is_refused_through_the_client(api):
    response = api.post("/api/v1/patients/", b"[" + b" " * (6 * MB) + b"]", content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def test_images_above_the_form_limit_still_upload_for_a_signed_in_user(rad_client, api, case, settings):
    data = noise_png(2600)  # about 6.5 MB: above DATA_UPLOAD_MAX_MEMORY_SIZE, below every upload limit
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE < len(data) < settings.XNET_MAX_UPLOAD_BYTES
    page = rad_client.post(reverse("case_upload", args=[case.pk]), {"images": [SimpleUploadedFile("a.png", data)]})
    assert page.status_code == 302
    response = api.post(
        f"/api/v1/cases/{case.pk}/images/", {"file": SimpleUploadedFile("b.png", data)}, format="multipart"
    )
    assert response.status_code == 202, response.content
    assert Image.objects.filter(case=case).count() == 2


# gunicorn, end to end ----------------------------------------------------------------------


def _http(port: int, raw: bytes, *, timeout: float) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


@pytest.fixture
def gunicorn(tmp_path):
    """gunicorn with xnet_site/gunicorn_conf.py, one worker, on the test database."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import xnet_site.wsgi"], cwd=ROOT, check=True, capture_output=True)
    import_seconds = time.monotonic() - started  # what a worker's start-up costs on this machine
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    env = {**os.environ, "DATABASE_URL": database_url_for_tests()}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:xnet_site.gunicorn_conf", "--workers", "1"]
            + ["--bind", f"127.0.0.1:{port}", "xnet_site.wsgi"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def answers() -> bool:
            assert process.poll() is None, log_path.read_text()
            try:
                return _http(port, b"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", timeout=1) != b""
            except OSError:
                return False

        wait_for(answers, timeout=10 * import_seconds + 5, what="gunicorn to answer", log=log_path.read_text)

        def stopped_log() -> str:
            """Stop gunicorn (it writes out its log as it goes) and return everything it logged."""
            _kill_group(process, signal.SIGTERM, timeout=10)
            return log_path.read_text()

        yield port, stopped_log, process.pid
    finally:
        _kill_group(process, signal.SIGTERM, timeout=10)


def test_gunicorn_answers_413_before_the_body_is_sent(gunicorn):
    port, _, _ = gunicorn
    request = b"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    started = time.monotonic()
    assert _http(port, request, timeout=30).startswith(b"HTTP/1.1 200")
    round_trip = time.monotonic() - started
    headers = (
        "POST /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {200 * MB}\r\n"
        f"Cookie: csrftoken={CSRF_COOKIE}\r\n\r\n"
    ).encode()
    # Only the headers and the first bytes: a server that read the body would wait for the rest.
    answer = _http(port, headers + CountingBody(200 * MB).read(64 * 1024), timeout=20 * round_trip + 1)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_gunicorn_access_log_leaves_out_query_strings_and_referers(gunicorn):
    port, stopped_log, _ = gunicorn
    search = (
        "GET /patients/?q=Lovelace-SECRET&mrn=MRN-SECRET-4711 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Referer: http://127.0.0.1/?mrn=REFERER-SECRET\r\nConnection: close\r\n\r\n"
    )
    assert _http(port, search.encode(), timeout=30).startswith(b"HTTP/1.1 302")  # to the login page
    too_long = f"GET /?mrn={'SECRET' * 1000} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    assert _http(port, too_long.encode(), timeout=30).startswith(b"HTTP/1.1 414")  # limit_request_line
    log = stopped_log()
    assert '"GET /patients/ HTTP/1.1" 302' in log
    assert "SECRET" not in log


def umask_of(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:"))


def test_gunicorn_processes_write_private_files(gunicorn):
    _, _, master = gunicorn
    workers = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert workers
    assert {umask_of(int(pid)) for pid in [master, *workers]} == {"0077"}
