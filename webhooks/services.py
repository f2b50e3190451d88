"""Writes for webhooks: subscriptions (department admins), deliveries (events), attempts (worker).

A delivery is created once per subscription, event and object (the unique constraint), after
the event's transaction committed, then published to Celery. An attempt runs under the
delivery's row lock (a duplicate message skips a locked or finished delivery), POSTs the signed
body, and records the outcome: delivered on a 2xx, else the next attempt at
XNET_WEBHOOK_RETRY_SECONDS x 2^(attempts-1) (at most XNET_WEBHOOK_RETRY_MAX_SECONDS), and given up
after XNET_WEBHOOK_MAX_ATTEMPTS attempts. Delivery is at least once: a worker that dies after the
receiver answered but before the row is saved sends again with the same X-XNET-Delivery id.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from audit.models import AuditEvent
from audit.services import audit_record
from webhooks import security
from webhooks.models import Delivery, Event, Subscription

logger = logging.getLogger(__name__)

MAX_DESCRIPTION = 200
MAX_ERROR = 1000
# A retry message runs at its countdown, which starts after next_attempt_at was stored; this
# slack only absorbs clock differences between worker machines.
NOT_DUE_SLACK = timedelta(milliseconds=500)


# Subscriptions ----------------------------------------------------------------------------


def _audit(user: User, subscription: Subscription, change: str) -> None:
    audit_record(
        action=AuditEvent.Action.INTEGRATION_CHANGE,
        actor=user,
        department_id=subscription.department_id,
        object_type="webhook",
        object_id=subscription.pk,
        detail={"change": change, "url": subscription.url, "events": list(subscription.events)},
    )


def _require_admin(user: User) -> None:
    if not user.is_department_admin:
        raise PermissionError("Only department admins manage webhooks.")


def subscription_create(
    *, created_by: User, url: str, events: list[str], description: str = ""
) -> tuple[Subscription, str]:
    """Register a URL for the admin's department; returns it with its secret (shown once)."""
    _require_admin(created_by)
    errors: dict[str, str] = {}
    url = (url or "").strip()
    if not url:
        errors["url"] = "Give the URL that receives the events."
    elif len(url) > 500:
        errors["url"] = "Keep the URL under 500 characters."
    else:
        try:
            security.resolve(url)
        except ValidationError as exc:
            errors["url"] = exc.message_dict["url"][0]
    unknown = [event for event in events if event not in Event.values]
    if not events:
        errors["events"] = "Choose at least one event."
    elif unknown:
        errors["events"] = f"Unknown event {unknown[0][:40]!r}; one of {', '.join(Event.values)}."
    description = (description or "").strip()
    if len(description) > MAX_DESCRIPTION:
        errors["description"] = f"Keep the description under {MAX_DESCRIPTION} characters."
    if errors:
        raise ValidationError(errors)
    secret = Subscription.new_secret()
    with transaction.atomic():
        subscription = Subscription.objects.create(
            department_id=created_by.department_id,
            url=url,
            events=sorted({str(event) for event in events}),
            description=description,
            secret=secret,
            created_by=created_by,
        )
        _audit(created_by, subscription, "webhook_create")
    logger.info("Webhook %s registered by %s for %s", subscription.pk, created_by.username, subscription.events)
    return subscription, secret


def subscription_deactivate(*, subscription: Subscription, user: User) -> Subscription:
    """Stop sending to it: no new delivery is created; pending ones are given up."""
    _require_admin(user)
    if user.department_id != subscription.department_id:
        raise Subscription.DoesNotExist("No such webhook.")
    now = timezone.now()
    with transaction.atomic():
        Subscription.objects.filter(pk=subscription.pk, is_active=True).update(is_active=False, deactivated_at=now)
        subscription.deliveries.filter(status__in=[Delivery.Status.PENDING, Delivery.Status.RETRYING]).update(
            status=Delivery.Status.FAILED, last_error="The webhook was deactivated.", next_attempt_at=None
        )
        _audit(user, subscription, "webhook_deactivate")
    subscription.refresh_from_db()
    return subscription


# Deliveries -------------------------------------------------------------------------------


def deliveries_create(*, department_id: int, event: str, object_key: str, data: dict) -> list[Delivery]:
    """One delivery per active subscription of the department to this event, each published
    once committed; an event already delivered for an object (a job saved twice) adds nothing."""
    created = []
    subscriptions = Subscription.objects.filter(department_id=department_id, is_active=True)
    for subscription in subscriptions:
        if event not in subscription.events:
            continue
        try:
            with transaction.atomic():
                delivery = Delivery.objects.create(
                    subscription=subscription,
                    event=event,
                    object_key=object_key,
                    payload=data,
                    next_attempt_at=timezone.now(),
                )
        except IntegrityError:
            continue  # this event for this object went out already
        created.append(delivery)
    if created:
        ids = [str(delivery.pk) for delivery in created]
        transaction.on_commit(lambda: publish(ids), robust=True)
    return created


def publish(delivery_ids: list[str], *, countdown: float | None = None) -> None:
    """Queue an attempt of each delivery; a broker that does not answer leaves them for the
    sweeper (the rows are stored already)."""
    from webhooks.tasks import deliver_webhook

    for delivery_id in delivery_ids:
        try:
            deliver_webhook.apply_async(args=[delivery_id], queue=settings.XNET_WEBHOOK_QUEUE, countdown=countdown)
        except Exception:  # noqa: BLE001 - any broker failure: the sweeper publishes it later
            logger.warning("Webhook delivery %s not queued (broker); the sweeper will queue it", delivery_id)


def body_of(delivery: Delivery) -> bytes:
    """The JSON body, the same bytes at every attempt (the signature covers them)."""
    document = {
        "id": str(delivery.pk),
        "event": delivery.event,
        "created_at": delivery.created_at.isoformat(),
        "data": delivery.payload,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def retry_delay(attempts: int) -> int:
    """Seconds before the next attempt after `attempts` failed ones: exponential, capped."""
    base = settings.XNET_WEBHOOK_RETRY_SECONDS
    return min(base * 2 ** max(attempts - 1, 0), settings.XNET_WEBHOOK_RETRY_MAX_SECONDS)


def delivery_attempt(*, delivery_id: str) -> float | None:
    """Send one attempt if the delivery is due and nobody else holds it. Returns the seconds
    until the next attempt when this attempt failed and another is due, else None (delivered,
    given up, finished already, held by another worker, or not due yet)."""
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("subscription")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None or delivery.is_done:
            return None  # unknown, held by another worker right now, or finished
        now = timezone.now()
        if delivery.next_attempt_at and delivery.next_attempt_at > now + NOT_DUE_SLACK:
            # A duplicate message (a redelivery) ahead of the planned time: the message that
            # planned it, or the sweeper, makes that attempt. Not rescheduled, so copies never pile up.
            return None
        subscription = delivery.subscription
        body = body_of(delivery)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "XNET-Webhooks/1",
            "X-XNET-Event": delivery.event,
            "X-XNET-Delivery": str(delivery.pk),
            "X-XNET-Timestamp": timestamp,
            "X-XNET-Signature": security.sign(subscription.secret, timestamp, body),
        }
        code: int | None = None
        error = ""
        try:
            code = security.post(subscription.url, body, headers, timeout=settings.XNET_WEBHOOK_TIMEOUT)
        except ValidationError as exc:
            error = f"Refused target: {exc.message_dict.get('url', [str(exc)])[0]}"
        except TimeoutError:
            error = f"No answer within {settings.XNET_WEBHOOK_TIMEOUT} s."
        except (OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        delivery.attempts += 1
        delivery.last_attempt_at = timezone.now()
        delivery.last_status_code = code
        if code is not None and 200 <= code < 300:
            delivery.status = Delivery.Status.SUCCEEDED
            delivery.delivered_at = delivery.last_attempt_at
            delivery.next_attempt_at = None
            delivery.last_error = ""
        else:
            if code is not None:
                error = f"HTTP {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")
            delivery.last_error = error[:MAX_ERROR]
            if delivery.attempts >= settings.XNET_WEBHOOK_MAX_ATTEMPTS:
                delivery.status = Delivery.Status.FAILED
                delivery.next_attempt_at = None
            else:
                delivery.status = Delivery.Status.RETRYING
                delivery.next_attempt_at = delivery.last_attempt_at + timedelta(seconds=retry_delay(delivery.attempts))
        delivery.save(
            update_fields=[
                "attempts",
                "last_attempt_at",
                "last_status_code",
                "status",
                "delivered_at",
                "next_attempt_at",
                "last_error",
            ]
        )
    logger.info(
        "Webhook delivery %s attempt %s: %s", delivery.pk, delivery.attempts, code if code is not None else error
    )
    if delivery.status == Delivery.Status.RETRYING:
        return retry_delay(delivery.attempts)
    return None


def deliveries_sweep() -> int:
    """Queue again deliveries whose attempt is overdue by XNET_WEBHOOK_REPUBLISH_AFTER seconds
    (the broker was down when they were published, or the message was lost); their count."""
    overdue = timezone.now() - timedelta(seconds=settings.XNET_WEBHOOK_REPUBLISH_AFTER)
    ids = [
        str(pk)
        for pk in Delivery.objects.filter(
            status__in=[Delivery.Status.PENDING, Delivery.Status.RETRYING], next_attempt_at__lte=overdue
        ).values_list("pk", flat=True)[:500]
    ]
    publish(ids)
    return len(ids)
