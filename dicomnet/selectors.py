"""Reads, scoped to the user's department."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import User
from dicomnet.models import Delivery, DicomNode, IntakeEvent


def node_list_for_user(*, user: User) -> QuerySet[DicomNode]:
    return (
        DicomNode.objects.filter(department_id=user.department_id) if user.department_id else DicomNode.objects.none()
    )


def intake_events_for_user(*, user: User, limit: int = 200) -> QuerySet[IntakeEvent]:
    if not user.department_id:
        return IntakeEvent.objects.none()
    return IntakeEvent.objects.filter(department_id=user.department_id).select_related("node")[:limit]


def delivery_list_for_user(*, user: User) -> QuerySet[Delivery]:
    if not user.department_id:
        return Delivery.objects.none()
    return Delivery.objects.filter(case__patient__department_id=user.department_id).select_related("node")


def deliveries_for_case(*, case_id: int, user: User) -> list[Delivery]:
    return list(delivery_list_for_user(user=user).filter(case_id=case_id).order_by("created_at", "id"))
