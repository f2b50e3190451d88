"""Receivers: a finished job (diagnosis) and a signed report (reviews) become webhook deliveries.

Both act on commit (transaction.on_commit, robust: a webhook failure never fails the worker's job
or the signature), so nothing is sent for work that rolls back. Each first asks, in one query,
whether any active subscription of the object's department wants the event: most departments have
none, and the worker's store should not build a payload for nobody (issue 11).
"""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from diagnosis.models import InferenceJob
from reviews.signals import report_signed
from webhooks import events
from webhooks.models import Event, Subscription


def subscribed(event: str, **department_of) -> bool:
    """Whether an active subscription of the department reached by `department_of` (a lookup
    from Department, e.g. patients__cases__images__jobs=id) takes this event: one query, read at
    commit, so a subscription added a moment ago counts."""
    lookup = {f"department__{path}": value for path, value in department_of.items()}
    # Events are a JSON list: matched here, as SQLite (command 1) has no JSON `contains` lookup.
    wanted = Subscription.objects.filter(is_active=True, **lookup).values_list("events", flat=True)
    return any(event in events for events in wanted)


def _job_finished(job_id: int, department_id: int | None) -> None:
    department_of = {"id": department_id} if department_id else {"patients__cases__images__jobs": job_id}
    if subscribed(Event.JOB_FINISHED, **department_of):
        events.job_finished(job_id)


def _report_signed(report_id: int) -> None:
    if subscribed(Event.REPORT_SIGNED, patients__cases__report=report_id):
        events.report_signed(report_id)


@receiver(post_save, sender=InferenceJob, dispatch_uid="webhooks_job_finished")
def job_saved(sender, instance: InferenceJob, created: bool = False, raw: bool = False, **kwargs) -> None:
    if raw or not instance.is_finished:
        return
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and "status" not in update_fields:
        return  # a finished job saved again for another field: the event went out already
    department_id = instance.loaded_department_id()  # the worker's jobs carry it: no join at commit
    transaction.on_commit(lambda pk=instance.pk: _job_finished(pk, department_id), robust=True)


@receiver(report_signed, dispatch_uid="webhooks_report_signed")
def report_was_signed(sender, report, **kwargs) -> None:
    transaction.on_commit(lambda pk=report.pk: _report_signed(pk), robust=True)
