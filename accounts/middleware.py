"""Per-request account security: the second-factor gate and the sliding idle timeout."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlencode

from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from accounts import two_factor

# The session's last sign of life (epoch seconds), set at login.
SEEN_KEY = "xnet_seen"
# Saving the session moves its expiry (SESSION_COOKIE_AGE, the idle limit) forward. Saving on
# every request (SESSION_SAVE_EVERY_REQUEST) would write the session row on every status poll;
# once a minute is enough for a limit counted in minutes.
TOUCH_EVERY_SECONDS = 60


class AccountSecurityMiddleware:
    """Place after AuthenticationMiddleware.

    A session whose second factor is pending (accounts.two_factor) reaches only the code, set-up
    and logout pages; every other page redirects there, and the API treats the session as not
    logged in (a 401/403 in the API's own error shape; API tokens are not affected).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = getattr(request, "session", None)
        if session is not None:
            seen = session.get(SEEN_KEY)
            now = int(time.time())
            # A logged-in session without the key predates this middleware (and may carry a
            # two-week expiry): touching it once puts it on the idle clock too.
            if (seen is None and SESSION_KEY in session) or (seen is not None and now - seen >= TOUCH_EVERY_SECONDS):
                session[SEEN_KEY] = now  # marks the session modified: saved with a new expiry
            state = session.get(two_factor.SESSION_STATE_KEY)
            if state and request.user.is_authenticated:
                response = self._gate(request, state)
                if response is not None:
                    return response
        return self.get_response(request)

    def _gate(self, request: HttpRequest, state: str) -> HttpResponse | None:
        if request.path.startswith("/api/"):
            request.user = AnonymousUser()
            return None
        target = reverse("otp_setup" if state == two_factor.SETUP else "otp_verify")
        allowed = {reverse("otp_verify"), reverse("otp_setup"), reverse("logout")}
        if request.path in allowed:
            return None
        query = urlencode({"next": request.get_full_path()}) if request.method == "GET" else ""
        return HttpResponseRedirect(f"{target}?{query}" if query else target)
