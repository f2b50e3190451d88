"""Signals the reviews app sends; higher apps (DICOM delivery, webhooks, FHIR) listen.

report_signed: sent by services.report_sign inside its transaction, with `report` and `user`.
Receivers that talk to the outside world should defer with transaction.on_commit, so nothing is
sent for a signature that rolls back.
"""

from __future__ import annotations

from django.dispatch import Signal

report_signed = Signal()
