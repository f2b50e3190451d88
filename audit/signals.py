"""Logins, logouts and failed logins, from Django's auth signals (pages, the Django admin and
anything else that calls django.contrib.auth.login/authenticate)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from audit.models import AuditEvent
from audit.services import audit_record


@receiver(user_logged_in, dispatch_uid="audit_login")
def _logged_in(sender, request, user, **kwargs) -> None:
    audit_record(action=AuditEvent.Action.LOGIN, actor=user, object_type="user", object_id=user.pk, request=request)


@receiver(user_logged_out, dispatch_uid="audit_logout")
def _logged_out(sender, request, user, **kwargs) -> None:
    if user is None:  # logging out without a session
        return
    audit_record(action=AuditEvent.Action.LOGOUT, actor=user, object_type="user", object_id=user.pk, request=request)


@receiver(user_login_failed, dispatch_uid="audit_login_failed")
def _login_failed(sender, credentials, request=None, **kwargs) -> None:
    """Record the username as typed; when it names an account, file the event under that
    account's department, so its admin sees attempts on their users (guessing included)."""
    typed = str(credentials.get("username", "") or "")
    known = get_user_model().objects.filter(username=typed).values("pk", "department_id").first() if typed else None
    audit_record(
        action=AuditEvent.Action.LOGIN_FAILED,
        actor_username=typed,
        department_id=known["department_id"] if known else None,
        object_type="user" if known else "",
        object_id=known["pk"] if known else "",
        detail={"known_user": known is not None},
        request=request,
    )
