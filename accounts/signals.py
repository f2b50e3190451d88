"""What a login starts (second-factor state, idle clock) and the audit event of a lockout."""

from __future__ import annotations

import time

from axes.signals import user_locked_out
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

from accounts import two_factor
from accounts.middleware import SEEN_KEY
from audit.models import AuditEvent
from audit.services import audit_record


@receiver(user_logged_in, dispatch_uid="accounts_session_start")
def _session_start(sender, request, user, **kwargs) -> None:
    session = getattr(request, "session", None)
    if session is None:
        return
    session[SEEN_KEY] = int(time.time())
    state = two_factor.otp_login_state(user=user)
    if state:
        session[two_factor.SESSION_STATE_KEY] = state
    else:
        session.pop(two_factor.SESSION_STATE_KEY, None)


@receiver(user_locked_out, dispatch_uid="accounts_locked_out")
def _locked_out(sender, request, username, ip_address, **kwargs) -> None:
    """One event when a lockout starts. axes signals every refused attempt during a lockout too;
    those (which do not count as failures, AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT) are
    already recorded as failed logins by the audit app."""
    if getattr(request, "axes_failures_since_start", None) is None:
        return
    typed = str(username or "")
    known = get_user_model().objects.filter(username=typed).values("pk", "department_id").first() if typed else None
    audit_record(
        action=AuditEvent.Action.LOCKED_OUT,
        actor_username=typed,
        department_id=known["department_id"] if known else None,
        object_type="user" if known else "",
        object_id=known["pk"] if known else "",
        detail={"failures": request.axes_failures_since_start, "address": ip_address, "known_user": bool(known)},
        request=request,
    )
