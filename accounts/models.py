"""Departments and their users.

Every clinical object belongs to a department through its patient; a user sees only their own
department's data. Superusers are site admins and belong to no department.
"""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


class Department(models.Model):
    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    radiologists_need_2fa = models.BooleanField(
        "radiologists must use two-factor authentication",
        default=False,
        help_text="Department admins and site admins always must; radiologists only when this is on.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class User(AbstractUser):
    class Role(models.TextChoices):
        RADIOLOGIST = "radiologist", "Radiologist"
        DEPARTMENT_ADMIN = "department_admin", "Department admin"

    department = models.ForeignKey(Department, null=True, blank=True, on_delete=models.PROTECT, related_name="users")
    role = models.CharField(max_length=32, choices=Role.choices, default=Role.RADIOLOGIST)
    # An account that files what a machine sends (dicomnet's DICOM intake): pages show it as the
    # uploader, but it never signs in (accounts.backends), holds no API token and no admin manages it.
    is_service_account = models.BooleanField(default=False)

    def clean(self) -> None:
        super().clean()
        if not self.is_superuser and self.department_id is None:
            raise ValidationError({"department": "Every user except site admins belongs to a department."})

    @property
    def is_department_admin(self) -> bool:
        return self.is_active and self.department_id is not None and self.role == self.Role.DEPARTMENT_ADMIN

    def can_manage(self, other: User) -> bool:
        """A department admin manages the users of their own department, not themselves."""
        return (
            self.is_department_admin
            and other.department_id == self.department_id
            and other.pk != self.pk
            and not other.is_service_account
        )

    @property
    def needs_2fa(self) -> bool:
        """Admins of any kind must use a second factor; radiologists when their department says so."""
        if self.is_superuser or self.role == self.Role.DEPARTMENT_ADMIN:
            return True
        return self.department is not None and self.department.radiologists_need_2fa

    def save(self, *args, **kwargs) -> None:
        # A new password or a deactivation ends every API token of the account, whatever path
        # changed it (pages, Django admin, shell): a token must not outlive the credentials or the
        # account it was issued under, nor come back with a reactivation.
        password_changed = self._password is not None
        super().save(*args, **kwargs)
        if password_changed or not self.is_active:
            reason = ApiToken.RevokeReason.PASSWORD_CHANGE if password_changed else ApiToken.RevokeReason.DEACTIVATION
            ApiToken.objects.filter(user=self, revoked_at__isnull=True).update(
                revoked_at=timezone.now(), revoke_reason=reason
            )


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def usable(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True, expires_at__gt=timezone.now(), user__is_active=True)


class ApiToken(models.Model):
    """A key for other software (PACS bridge, scripts) to call the API as one user.

    Only a SHA-256 of the key is stored: the key is shown once, when it is created, and a database
    dump or the admin shows the first characters only. A SHA-256 is enough (no slow hash) because
    the key is 256 random bits, not something a person chose.
    """

    PREFIX_LENGTH = 8

    class RevokeReason(models.TextChoices):
        REVOKED = "revoked", "Revoked"
        PASSWORD_CHANGE = "password_change", "Password changed"
        DEACTIVATION = "deactivation", "Account deactivated"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What uses it, e.g. 'PACS bridge'.")
    prefix = models.CharField(max_length=PREFIX_LENGTH, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoke_reason = models.CharField(max_length=32, choices=RevokeReason.choices, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def new_key() -> str:
        return secrets.token_urlsafe(32)

    def set_key(self, key: str) -> None:
        self.prefix = key[: self.PREFIX_LENGTH]
        self.key_hash = _hash_key(key)

    @classmethod
    def find(cls, key: str) -> ApiToken | None:
        """The token with this key, usable or not (the caller says why it is refused)."""
        return cls.objects.select_related("user").filter(key_hash=_hash_key(key)).first()

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return self.get_revoke_reason_display() or "Revoked"
        if self.expires_at <= timezone.now():
            return "Expired"
        return "Active"

    @property
    def is_usable(self) -> bool:
        return self.status == "Active" and self.user.is_active
