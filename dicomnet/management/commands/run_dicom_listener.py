"""manage.py run_dicom_listener: XNET's DICOM C-STORE / C-ECHO listener, in its own process."""

from __future__ import annotations

import contextlib
import logging

from django.conf import settings
from django.core.management.base import BaseCommand

from dicomnet.network import start_listener


class Command(BaseCommand):
    # Like the Celery worker, the listener serves no URL: it skips the web checks (they import
    # the URL configuration) and starts in a second.
    requires_system_checks: list[str] = []
    help = "Receive DICOM studies (C-STORE) from the departments' incoming nodes; answers C-ECHO."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=settings.XNET_DICOM_HOST)
        parser.add_argument("--port", type=int, default=settings.XNET_DICOM_PORT)

    def handle(self, *args, host: str, port: int, **options) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        self.stdout.write(f"DICOM listener {settings.XNET_DICOM_AE_TITLE} on {host}:{port} (Ctrl-C stops it)")
        self.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            start_listener(host=host, port=port, block=True)
