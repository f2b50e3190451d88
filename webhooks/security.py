"""Where a webhook may point (SSRF care), how a delivery is signed, and how a receiver checks it.

Targets: https only, to an address on the public internet. Private (10/8, 172.16/12,
192.168/16, fc00::/7), loopback, link-local (169.254/16 with the cloud metadata service,
fe80::/10), shared, multicast, reserved and unspecified addresses are refused, whatever the name
resolves to. XNET_WEBHOOK_ALLOW_LOOPBACK (development and tests only) also allows loopback
addresses, over http or https. The check runs when the URL is registered and again before every
attempt, and the connection goes to the address that was checked (no second DNS lookup that a
rebinding name could answer differently). Redirects are not followed.

Signature: X-XNET-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)> with
X-XNET-Timestamp: <Unix seconds>. verify_signature() is what a receiver runs (README).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

MAX_RESPONSE_BYTES = 64 * 1024  # read and dropped; only the status matters


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-XNET-Signature value for this body at this timestamp."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str, timestamp: str, body: bytes, header: str, tolerance_s: int = 300, now: float | None = None
) -> bool:
    """A receiver's check: the header is the HMAC of this body at this timestamp under the
    subscription's secret, and the timestamp is within tolerance_s seconds of now (a captured
    delivery replayed later fails). Compare the raw body bytes, before any JSON parsing."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, str(timestamp), body), header or "")


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked IP the connection goes to


def _allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return bool(settings.XNET_WEBHOOK_ALLOW_LOOPBACK)
    return ip.is_global and not ip.is_multicast


def resolve(url: str) -> Target:
    """The URL's target, checked; ValidationError({"url": ...}) says why one is refused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValidationError({"url": "This is not a valid URL."}) from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValidationError({"url": "Give an https:// URL."})
    if parts.username or parts.password:
        raise ValidationError({"url": "Leave credentials out of the URL: deliveries are signed with the secret."})
    try:
        infos = socket.getaddrinfo(parts.hostname, port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ValidationError({"url": f"The host {parts.hostname} does not resolve."}) from None
    addresses = sorted({info[4][0] for info in infos})
    refused = [address for address in addresses if not _allowed(address)]
    if refused or not addresses:
        raise ValidationError(
            {
                "url": f"{parts.hostname} resolves to {', '.join(refused)}: a private, loopback, link-local or "
                "reserved address, which webhooks may not call."
            }
        )
    loopback = all(ipaddress.ip_address(address).is_loopback for address in addresses)
    if parts.scheme == "http" and not loopback:
        raise ValidationError({"url": "Give an https:// URL (plain http is for loopback in development only)."})
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or (443 if parts.scheme == "https" else 80),
        path=path,
        address=addresses[0],
    )


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self._address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        # The certificate is checked against the URL's host name, not the address.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float) -> int:
    """POST to a checked target; the HTTP status. Raises ValidationError (refused target) or
    OSError / http.client.HTTPException (network failure, timeout)."""
    target = resolve(url)
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(target, timeout)
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        return response.status
    finally:
        connection.close()
