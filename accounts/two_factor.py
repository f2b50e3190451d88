"""Two-factor authentication: an authenticator app (TOTP) and single-use recovery codes.

Who must use it is `User.needs_2fa`; anyone may. At login (accounts.signals) the session gets a
state: "verify" (the user has an authenticator: ask for a code) or "setup" (the user must have one
and has none: enrol first). Until that state is cleared, accounts.middleware lets the session reach
only these pages. Keeping the state in the session costs no query per request.
"""

from __future__ import annotations

import io

import django_otp
from django.db import transaction
from django.http import HttpRequest
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from audit.models import AuditEvent
from audit.services import audit_record

SESSION_STATE_KEY = "xnet_2fa"
VERIFY = "verify"
SETUP = "setup"
RECOVERY_CODE_COUNT = 10
# Wrong codes in one session before it is logged out (each device also slows down after a
# failure: django-otp's throttling doubles the wait after each wrong code).
MAX_FAILED_CODES = 5
FAILED_CODES_KEY = "xnet_2fa_failures"


def otp_has_authenticator(*, user: User) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def otp_login_state(*, user: User) -> str | None:
    """What a new session of this user must do before anything else, if anything."""
    if otp_has_authenticator(user=user):
        return VERIFY
    if user.needs_2fa:
        return SETUP
    return None


def otp_pending(request: HttpRequest) -> str | None:
    return request.session.get(SESSION_STATE_KEY)


def otp_mark_verified(request: HttpRequest, device: Device | None) -> None:
    """The session passed its second factor (or enrolled one just now)."""
    if device is not None:
        django_otp.login(request, device)
    request.session.pop(SESSION_STATE_KEY, None)
    request.session.pop(FAILED_CODES_KEY, None)


def otp_setup_device(*, user: User) -> TOTPDevice:
    """The authenticator being set up: one unconfirmed device per user, kept until confirmed, so
    reloading the page does not change the QR code the user has already scanned."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)
    return device


def _new_recovery_codes(user: User) -> list[str]:
    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name="Recovery codes", confirmed=True)
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODE_COUNT)]
    StaticToken.objects.bulk_create([StaticToken(device=device, token=code) for code in codes])
    return codes


def otp_confirm_setup(*, user: User, device: TOTPDevice, code: str) -> list[str] | None:
    """Confirm the authenticator with a code it shows; replaces any earlier authenticator and
    recovery codes. Returns the new recovery codes (shown once), or None for a wrong code."""
    if device.user_id != user.pk or device.confirmed:
        return None
    if not device.verify_token(_normalise(code)):
        return None
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        codes = _new_recovery_codes(user)
        audit_record(action=AuditEvent.Action.OTP_ENROL, actor=user, object_type="user", object_id=user.pk)
    return codes


def otp_regenerate_recovery_codes(*, user: User) -> list[str]:
    """New recovery codes; the old ones stop working."""
    with transaction.atomic():
        codes = _new_recovery_codes(user)
        audit_record(action=AuditEvent.Action.OTP_RECOVERY_CODES, actor=user, object_type="user", object_id=user.pk)
    return codes


def otp_recovery_codes_left(*, user: User) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def _normalise(code: str) -> str:
    return "".join(code.split()).lower()


def otp_verify(*, user: User, code: str) -> Device | None:
    """The device that accepts this code: six digits are an authenticator code, anything else
    a recovery code (used up by this). None, and an audit event, for a wrong code."""
    code = _normalise(code)
    model = TOTPDevice if code.isdigit() else StaticDevice
    with transaction.atomic():
        for device in model.objects.select_for_update().filter(user=user, confirmed=True):
            if device.verify_token(code):
                return device
    audit_record(
        action=AuditEvent.Action.OTP_FAILED,
        actor=user,
        object_type="user",
        object_id=user.pk,
        detail={"kind": "authenticator" if model is TOTPDevice else "recovery code"},
    )
    return None


def otp_remove(*, user: User, removed_by: User) -> None:
    """Remove the user's authenticator and recovery codes (a lost phone, or turning 2FA off)."""
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user).delete()
        StaticDevice.objects.filter(user=user).delete()
        audit_record(
            action=AuditEvent.Action.OTP_RESET,
            actor=removed_by,
            object_type="user",
            object_id=user.pk,
            detail={"username": user.username},
        )


def qr_code_svg(data: str) -> str:
    """The otpauth:// URI as an inline SVG QR code (no image file, nothing sent anywhere)."""
    import qrcode
    import qrcode.image.svg

    buffer = io.BytesIO()
    qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=14).save(buffer)
    svg = buffer.getvalue().decode()
    return svg[svg.index("<svg") :]  # drop the XML declaration: the SVG sits inside HTML
