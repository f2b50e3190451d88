"""Reads for the department-admin pages, scoped like every other read in XNET."""

from __future__ import annotations

from datetime import datetime

from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Exists, Max, OuterRef, QuerySet, Sum
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import ApiToken, User


def user_list_for_admin(*, admin: User) -> QuerySet[User]:
    """The users a department admin may see: their own department's, nobody else's.

    Anyone else gets an empty queryset, so a lookup through it is a 404, not a 403 that would
    confirm the account exists.
    """
    if not admin.is_department_admin:
        return User.objects.none()
    authenticator = TOTPDevice.objects.filter(user=OuterRef("pk"), confirmed=True)
    return (
        User.objects.filter(department_id=admin.department_id)
        .select_related("department")
        .annotate(has_authenticator=Exists(authenticator))
        .order_by("username")
    )


def user_lockout_until(*, user: User) -> datetime | None:
    """When the user's login lockout ends, or None when their account is not locked.

    Counts the failures recorded under the username (any address) within the cool-off window,
    the way django-axes does for its per-account limit.
    """
    cool_off = settings.AXES_COOLOFF_TIME
    attempts = AccessAttempt.objects.filter(username=user.username, attempt_time__gte=timezone.now() - cool_off)
    summary = attempts.aggregate(failures=Sum("failures_since_start"), last=Max("attempt_time"))
    if (summary["failures"] or 0) < settings.AXES_FAILURE_LIMIT:
        return None
    return summary["last"] + cool_off


def api_token_list_for_admin(*, admin: User) -> QuerySet[ApiToken]:
    """The API tokens of a department admin's department (every user's), newest first."""
    if not admin.is_department_admin:
        return ApiToken.objects.none()
    return ApiToken.objects.filter(user__department_id=admin.department_id).select_related("user", "created_by")
