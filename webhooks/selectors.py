"""Reads for webhooks: a department admin sees their own department's subscriptions and
deliveries only; anyone else sees none (another department's webhook is a 404)."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import User
from webhooks.models import Delivery, Subscription


def subscription_list_for_admin(*, user: User) -> QuerySet[Subscription]:
    if not user.is_authenticated or not user.is_department_admin:
        return Subscription.objects.none()
    return Subscription.objects.filter(department_id=user.department_id).select_related("created_by")


def delivery_list_for_admin(*, user: User) -> QuerySet[Delivery]:
    if not user.is_authenticated or not user.is_department_admin:
        return Delivery.objects.none()
    return (
        Delivery.objects.filter(subscription__department_id=user.department_id)
        .select_related("subscription")
        .order_by("-created_at")
    )
