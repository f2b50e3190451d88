"""Writes for department user management.

Department admins manage the users of their own department only; site admins use the Django
admin. Every write runs full_clean, so the pages and any later API share one set of rules.
"""

from __future__ import annotations

from datetime import timedelta

from axes.utils import reset as axes_reset
from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from accounts import two_factor
from accounts.models import ApiToken, Department, User
from audit.models import AuditEvent
from audit.services import audit_record


def _check_can_manage(*, actor: User, user: User) -> None:
    """For role and active changes: not on oneself (see below), only one's own department."""
    if actor.pk == user.pk:
        # An admin locking themselves out (or demoting themselves) can leave a department
        # without anyone able to manage it: another admin has to do it.
        raise ValidationError("You cannot change your own role or deactivate your own account.", code="self")
    if not actor.can_manage(user):
        raise PermissionDenied("You can only manage users of your own department.")


def user_create(
    *,
    created_by: User,
    username: str,
    password: str,
    role: str = User.Role.RADIOLOGIST,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
) -> User:
    """Create a user in the creating admin's department, with a password that passes the validators."""
    if not created_by.is_department_admin:
        raise PermissionDenied("Only department admins can create users.")
    user = User(
        username=username.strip(),
        email=email.strip(),
        first_name=first_name.strip(),
        last_name=last_name.strip(),
        role=role,
        department_id=created_by.department_id,
    )
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise ValidationError({"password": exc.messages}) from None
    user.set_password(password)
    user.full_clean()
    with transaction.atomic():
        user.save()
        audit_record(
            action=AuditEvent.Action.USER_CREATE,
            actor=created_by,
            object_type="user",
            object_id=user.pk,
            detail={"username": user.username, "role": user.role},
        )
    return user


def user_update_role(*, user: User, role: str, changed_by: User) -> User:
    _check_can_manage(actor=changed_by, user=user)
    previous = user.role
    user.role = role
    user.full_clean()
    with transaction.atomic():
        user.save(update_fields=["role"])
        audit_record(
            action=AuditEvent.Action.USER_ROLE_CHANGE,
            actor=changed_by,
            object_type="user",
            object_id=user.pk,
            detail={"username": user.username, "from": previous, "to": role},
        )
    return user


def user_set_active(*, user: User, is_active: bool, changed_by: User) -> User:
    """Deactivate or reactivate: a deactivated user can no longer log in or use an API token."""
    _check_can_manage(actor=changed_by, user=user)
    user.is_active = is_active
    user.full_clean()
    with transaction.atomic():
        user.save(update_fields=["is_active"])
        audit_record(
            action=AuditEvent.Action.USER_REACTIVATE if is_active else AuditEvent.Action.USER_DEACTIVATE,
            actor=changed_by,
            object_type="user",
            object_id=user.pk,
            detail={"username": user.username},
        )
    return user


def _check_same_department(*, actor: User, user: User) -> None:
    """For edits an admin may also make to their own account (names, password, unlock)."""
    if not actor.is_department_admin or actor.department_id != user.department_id:
        raise PermissionDenied("You can only manage users of your own department.")


def user_update_profile(*, user: User, changed_by: User, first_name: str, last_name: str, email: str) -> User:
    """Names and e-mail: what a department admin may correct for anyone of their department."""
    _check_same_department(actor=changed_by, user=user)
    before = {"first_name": user.first_name, "last_name": user.last_name, "email": user.email}
    user.first_name, user.last_name, user.email = first_name.strip(), last_name.strip(), email.strip()
    user.full_clean()
    after = {"first_name": user.first_name, "last_name": user.last_name, "email": user.email}
    changed = {field: {"from": before[field], "to": after[field]} for field in before if before[field] != after[field]}
    if not changed:
        return user
    with transaction.atomic():
        user.save(update_fields=list(changed))
        audit_record(
            action=AuditEvent.Action.USER_UPDATE,
            actor=changed_by,
            object_type="user",
            object_id=user.pk,
            detail={"username": user.username, "changed": changed},
        )
    return user


def user_reset_password(*, user: User, changed_by: User, password: str) -> User:
    """Set a new password for a user who forgot theirs. Their sessions end (Django ties a session
    to the password) and their API tokens are revoked (User.save)."""
    _check_can_manage(actor=changed_by, user=user)
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise ValidationError({"password": exc.messages}) from None
    user.set_password(password)
    with transaction.atomic():
        user.save(update_fields=["password"])
        audit_record(
            action=AuditEvent.Action.PASSWORD_RESET,
            actor=changed_by,
            object_type="user",
            object_id=user.pk,
            detail={"username": user.username},
        )
    return user


def user_unlock(*, user: User, changed_by: User) -> int:
    """End a login lockout early: forget the user's failed logins (and so their share of the
    failures counted against the addresses they came from). Returns the records removed."""
    _check_can_manage(actor=changed_by, user=user)
    removed = axes_reset(username=user.username)
    audit_record(
        action=AuditEvent.Action.USER_UNLOCK,
        actor=changed_by,
        object_type="user",
        object_id=user.pk,
        detail={"username": user.username, "attempt_records": removed},
    )
    return removed


def user_reset_2fa(*, user: User, changed_by: User) -> None:
    """A lost phone: remove the user's authenticator and recovery codes; if they must use two
    factors, their next login asks them to set up a new authenticator."""
    _check_can_manage(actor=changed_by, user=user)
    two_factor.otp_remove(user=user, removed_by=changed_by)


def department_set_radiologists_need_2fa(*, department: Department, required: bool, changed_by: User) -> Department:
    if not changed_by.is_department_admin or changed_by.department_id != department.pk:
        raise PermissionDenied("Only this department's admins can change its settings.")
    if department.radiologists_need_2fa == required:
        return department
    department.radiologists_need_2fa = required
    with transaction.atomic():
        department.save(update_fields=["radiologists_need_2fa"])
        audit_record(
            action=AuditEvent.Action.DEPARTMENT_SETTINGS,
            actor=changed_by,
            object_type="department",
            object_id=department.pk,
            detail={"radiologists_need_2fa": required},
        )
    return department


def api_token_create(*, user: User, name: str, days: int, created_by: User | None) -> tuple[ApiToken, str]:
    """A new API token acting as `user`; returns it and its key, which is stored only hashed and
    so can be shown this once. `created_by` is the department admin (None: an operator at the
    command line)."""
    if created_by is not None and (
        not created_by.is_department_admin or created_by.department_id != user.department_id
    ):
        raise PermissionDenied("You can only create tokens for users of your own department.")
    if not user.is_active:
        raise ValidationError({"user": "This account is deactivated."})
    if user.is_service_account:
        raise ValidationError({"user": "This account files what DICOM nodes send; it holds no token."})
    max_days = settings.XNET_API_TOKEN_MAX_DAYS
    if not 1 <= days <= max_days:
        raise ValidationError({"days": f"A token lasts between 1 and {max_days} days."})
    key = ApiToken.new_key()
    token = ApiToken(
        user=user,
        name=name.strip(),
        created_by=created_by,
        expires_at=timezone.now() + timedelta(days=days),
    )
    token.set_key(key)
    token.full_clean()
    with transaction.atomic():
        token.save()
        audit_record(
            action=AuditEvent.Action.API_TOKEN_CREATE,
            actor=created_by,
            actor_username="" if created_by else "(command line)",
            department_id=user.department_id,
            object_type="user",
            object_id=user.pk,
            detail={"token": token.pk, "name": token.name, "prefix": token.prefix, "days": days},
        )
    return token, key


def api_token_revoke(*, token: ApiToken, revoked_by: User | None) -> ApiToken:
    if revoked_by is not None and (
        not revoked_by.is_department_admin or revoked_by.department_id != token.user.department_id
    ):
        raise PermissionDenied("You can only revoke tokens of your own department.")
    if token.revoked_at is not None:
        return token
    token.revoked_at = timezone.now()
    token.revoke_reason = ApiToken.RevokeReason.REVOKED
    with transaction.atomic():
        token.save(update_fields=["revoked_at", "revoke_reason"])
        audit_record(
            action=AuditEvent.Action.API_TOKEN_REVOKE,
            actor=revoked_by,
            actor_username="" if revoked_by else "(command line)",
            department_id=token.user.department_id,
            object_type="user",
            object_id=token.user_id,
            detail={"token": token.pk, "name": token.name, "prefix": token.prefix},
        )
    return token
