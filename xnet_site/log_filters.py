"""Logging filters named in LOGGING (xnet_site/settings.py).

Imported while Django configures logging, before the apps are loaded: import nothing of Django's
models or of our apps here.
"""

from __future__ import annotations

import logging


class QuietClientErrors(logging.Filter):
    """On django.request: a 4xx (a refused or missing page) keeps its one-line warning but loses
    the traceback Django attaches to a 403; a 5xx keeps everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            record.exc_info = None
            record.exc_text = None
        return True
