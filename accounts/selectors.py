"""Reads for the department-admin pages, scoped like every other read in XNET."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import User


def user_list_for_admin(*, admin: User) -> QuerySet[User]:
    """The users a department admin may see: their own department's, nobody else's.

    Anyone else gets an empty queryset, so a lookup through it is a 404, not a 403 that would
    confirm the account exists.
    """
    if not admin.is_department_admin:
        return User.objects.none()
    return User.objects.filter(department_id=admin.department_id).order_by("username")
