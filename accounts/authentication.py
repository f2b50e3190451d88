"""API token authentication against accounts.ApiToken (hashed keys with an expiry)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from accounts.models import ApiToken
from audit.services import client_ip

# last_used_at is written at most this often per token, so a client polling every second does
# not cost a database write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiTokenAuthentication(TokenAuthentication):
    """`Authorization: Token <key>`, as before; the key is looked up by its SHA-256.

    Wrong keys are counted per client address: past XNET_API_TOKEN_FAILURE_LIMIT within
    XNET_API_TOKEN_FAILURE_WINDOW seconds the address gets 429 for token calls until the window
    ends (a random 256-bit key cannot be guessed, but the lookups still cost the server).
    Subclassing DRF's TokenAuthentication keeps the OpenAPI schema's `tokenAuth` scheme.
    """

    model = ApiToken

    def authenticate(self, request):
        address = client_ip(request._request) or "unknown"
        failures_key = f"xnet:api-token-failures:{address}"
        if cache.get(failures_key, 0) >= settings.XNET_API_TOKEN_FAILURE_LIMIT:
            raise exceptions.Throttled(
                wait=settings.XNET_API_TOKEN_FAILURE_WINDOW,
                detail="Too many requests with a wrong API token from this address.",
            )
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            # add then incr: the counter's window starts at the first failure, not the latest.
            if not cache.add(failures_key, 1, timeout=settings.XNET_API_TOKEN_FAILURE_WINDOW):
                try:
                    cache.incr(failures_key)
                except ValueError:  # expired between add and incr
                    cache.add(failures_key, 1, timeout=settings.XNET_API_TOKEN_FAILURE_WINDOW)
            raise

    def authenticate_credentials(self, key: str):
        token = ApiToken.find(key)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed(
                f"Token no longer valid: {token.get_revoke_reason_display().lower()}."
            )
        now = timezone.now()
        if token.expires_at <= now:
            raise exceptions.AuthenticationFailed("Token expired.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
        return token.user, token
