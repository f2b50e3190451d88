"""Writing audit events: one function, audit_record, used by the middleware, the auth signals,
the token authentication and the account services.

Recording never breaks what is being audited: a failure is logged and the request goes on. The
insert runs in its own savepoint, so a failed insert inside a caller's transaction does not
poison that transaction.
"""

from __future__ import annotations

import ipaddress
import logging
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest

from audit.models import AuditEvent

logger = logging.getLogger(__name__)

# The request being served, set by audit.middleware.AuditMiddleware: lets a service deep in a
# call chain (user management) record where the request came from without taking HTTP arguments.
current_request: ContextVar[HttpRequest | None] = ContextVar("xnet_audit_request", default=None)


def _valid_ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: REMOTE_ADDR, or X-Forwarded-For when REMOTE_ADDR is a trusted proxy.

    X-Forwarded-For is written by whoever sends the request, so it is believed only from the
    proxies listed in XNET_TRUSTED_PROXIES, read right to left: the first address that is not one
    of our proxies is the client.
    """
    remote = _valid_ip(request.META.get("REMOTE_ADDR", "") or "")
    trusted = set(getattr(settings, "XNET_TRUSTED_PROXIES", []))
    if remote is None or remote not in trusted:
        return remote
    forwarded = [part for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    for hop in reversed(forwarded):
        address = _valid_ip(hop)
        if address is None:
            return remote  # a malformed chain: do not guess
        if address not in trusted:
            return address
    return remote


def audit_record(
    *,
    action: str,
    actor: Any = None,
    actor_username: str = "",
    department_id: int | None = None,
    object_type: str = "",
    object_id: Any = "",
    detail: dict | None = None,
    request: HttpRequest | None = None,
) -> AuditEvent | None:
    """Append one event; returns it, or None when it could not be written (logged, never raised).

    `actor` is the acting user (None for a failed login or an anonymous request); the department
    defaults to the actor's. Without `request`, the request being served (if any) gives the IP
    address, user agent, method and path.
    """
    request = request if request is not None else current_request.get()
    try:
        if actor is not None and not getattr(actor, "is_authenticated", False):
            actor = None
        if actor is not None:
            actor_username = actor_username or actor.get_username()
            if department_id is None:
                department_id = actor.department_id
        event = AuditEvent(
            action=action,
            actor=actor,
            actor_username=(actor_username or "")[:150],
            department_id=department_id,
            object_type=object_type[:32],
            object_id=str(object_id if object_id is not None else "")[:64],
            detail=detail or {},
        )
        if request is not None:
            event.ip_address = client_ip(request)
            event.user_agent = request.META.get("HTTP_USER_AGENT", "")[:255]
            event.method = (request.method or "")[:8]
            event.path = request.path[:500]
        with transaction.atomic():
            event.save()
        return event
    except Exception:
        logger.exception("Could not record audit event %s by %s", action, actor_username or "-")
        return None
