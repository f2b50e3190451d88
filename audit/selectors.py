"""Department-scoped reads of the audit trail."""

from __future__ import annotations

from datetime import date

from django.db.models import QuerySet

from accounts.models import User
from audit.models import AuditEvent


def audit_event_list_for_admin(
    *,
    admin: User,
    action: str = "",
    username: str = "",
    date_from: date | None = None,
    date_to: date | None = None,
    object_type: str = "",
    object_id: str = "",
) -> QuerySet[AuditEvent]:
    """A department admin's own department's events, newest first; nothing for anyone else.

    Site admins read every department's events in the Django admin instead.
    """
    if not admin.is_department_admin:
        return AuditEvent.objects.none()
    events = AuditEvent.objects.filter(department_id=admin.department_id)
    if action:
        events = events.filter(action=action)
    if username:
        events = events.filter(actor_username__iexact=username)
    if date_from:
        events = events.filter(created_at__date__gte=date_from)
    if date_to:
        events = events.filter(created_at__date__lte=date_to)
    if object_type:
        events = events.filter(object_type=object_type)
    if object_id:
        events = events.filter(object_id=object_id)
    return events.order_by("-created_at", "-id")
