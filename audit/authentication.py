"""Token authentication that leaves an audit trail of API token use."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache

from accounts.authentication import ApiTokenAuthentication
from audit.models import AuditEvent
from audit.services import audit_record


class AuditedTokenAuthentication(ApiTokenAuthentication):
    """accounts' hashed API token authentication, recording an `api_token_use` event per token at most once per
    XNET_AUDIT_TOKEN_USE_INTERVAL seconds: a client that polls a job every second would otherwise
    write an event per poll. What the token was used for is recorded anyway for the views that
    matter (case, patient and image views, uploads, sign-offs) by the audit middleware.

    The throttle lives in Django's cache: with the default per-process cache each web process
    records at most one event per token per interval; a shared cache (Redis) makes it one in all.
    """

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None:
            user, token = result
            interval = settings.XNET_AUDIT_TOKEN_USE_INTERVAL
            # cache.add is atomic: of concurrent requests, only the one that adds the key records.
            if interval <= 0 or cache.add(f"xnet:audit:token-use:{token.pk}", 1, timeout=interval):
                audit_record(
                    action=AuditEvent.Action.API_TOKEN_USE,
                    actor=user,
                    object_type="user",
                    object_id=user.pk,
                    detail={"throttle_seconds": interval, "token": token.pk, "token_name": token.name},
                    request=request._request,
                )
        return result
