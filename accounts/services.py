"""Writes for department user management.

Department admins manage the users of their own department only; site admins use the Django
admin. Every write runs full_clean, so the pages and any later API share one set of rules.
"""

from __future__ import annotations

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from accounts.models import User
from audit.models import AuditEvent
from audit.services import audit_record


def _check_can_manage(*, actor: User, user: User) -> None:
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
