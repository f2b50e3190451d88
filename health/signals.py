"""Beat's heartbeat: recorded in the beat process each time it publishes the sweeper.

Beat has no tick hook of its own; the sweeper entry (every XNET_SWEEP_INTERVAL seconds) is its
pulse. The flag keeps a manual publish of the same task elsewhere from counting as beat.
"""

from __future__ import annotations

import logging

from celery.signals import beat_embedded_init, beat_init, before_task_publish
from django.db import connections

from health.models import Heartbeat
from health.selectors import BEAT
from health.services import heartbeat_record

logger = logging.getLogger(__name__)

BEAT_PULSE_TASK = "diagnosis.tasks.sweep_stalled_jobs"
_in_beat = False


@beat_init.connect
@beat_embedded_init.connect
def _beat_started(sender=None, **kwargs) -> None:
    global _in_beat
    _in_beat = True


@before_task_publish.connect
def _beat_published(sender=None, **kwargs) -> None:
    if not _in_beat or sender != BEAT_PULSE_TASK:
        return
    try:
        heartbeat_record(kind=Heartbeat.Kind.BEAT, name=BEAT)
    except Exception:
        logger.exception("Could not record beat's heartbeat")
    finally:
        connections.close_all()
