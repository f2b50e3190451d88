"""Append-only audit events: who did what, to which object, when, and from where.

Nothing in the application updates or deletes an event: the model and its queryset refuse, and
on PostgreSQL a trigger refuses too (migration 0002), so a bug or a shell session cannot either.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import Department


class AuditLogError(Exception):
    """An audit event was about to be changed or deleted."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AuditLogError("audit events are append-only")

    def delete(self):
        raise AuditLogError("audit events are append-only")


class AuditEvent(models.Model):
    class Action(models.TextChoices):
        LOGIN = "login", "Logged in"
        LOGIN_FAILED = "login_failed", "Failed login"
        LOGOUT = "logout", "Logged out"
        PASSWORD_CHANGE = "password_change", "Changed password"
        CASE_VIEW = "case_view", "Viewed a case"
        PATIENT_VIEW = "patient_view", "Viewed a patient"
        IMAGE_VIEW = "image_view", "Viewed an image"
        FILE_DOWNLOAD = "file_download", "Downloaded a file"
        UPLOAD = "upload", "Uploaded images"
        SIGN_OFF = "sign_off", "Signed a report"
        ADDENDUM = "addendum", "Added an addendum"
        REPORT_DOWNLOAD = "report_download", "Downloaded a report"
        USER_CREATE = "user_create", "Created a user"
        USER_DEACTIVATE = "user_deactivate", "Deactivated a user"
        USER_REACTIVATE = "user_reactivate", "Reactivated a user"
        USER_ROLE_CHANGE = "user_role_change", "Changed a user's role"
        API_TOKEN_USE = "api_token_use", "Used an API token"
        # Accounts and authentication (accounts app).
        LOCKED_OUT = "locked_out", "Locked out after failed logins"
        USER_UNLOCK = "user_unlock", "Unlocked a user's login"
        USER_UPDATE = "user_update", "Changed a user's name or e-mail"
        PASSWORD_RESET = "password_reset", "Reset a user's password"
        OTP_ENROL = "otp_enrol", "Set up two-factor authentication"
        OTP_FAILED = "otp_failed", "Failed two-factor code"
        OTP_RECOVERY_CODES = "otp_recovery_codes", "Made new recovery codes"
        OTP_RESET = "otp_reset", "Removed two-factor authentication"
        DEPARTMENT_SETTINGS = "department_settings", "Changed department settings"
        API_TOKEN_CREATE = "api_token_create", "Created an API token"
        API_TOKEN_REVOKE = "api_token_revoke", "Revoked an API token"
        # Patient data written and read, and the Django admin (audit app).
        PATIENT_CREATE = "patient_create", "Registered a patient"
        CASE_CREATE = "case_create", "Created a case"
        PATIENT_LIST = "patient_list", "Listed or searched patients"
        CASE_LIST = "case_list", "Listed or searched cases"
        RESULT_VIEW = "result_view", "Viewed an AI result"
        ADMIN_ADD = "admin_add", "Added in the Django admin"
        ADMIN_CHANGE = "admin_change", "Changed in the Django admin"
        ADMIN_DELETE = "admin_delete", "Deleted in the Django admin"
        ADMIN_VIEW = "admin_view", "Viewed in the Django admin"
        # Clinical records (diagnosis app).
        IMAGE_WITHDRAW = "image_withdraw", "Withdrew an image"
        JOB_RETRY = "job_retry", "Re-ran a failed AI job"
        MODEL_STATUS_CHANGE = "model_status_change", "Changed a model's status"
        DRIFT_ALARM = "drift_alarm", "A model drifted (weekly drift alarm)"
        INTEGRATION_CHANGE = "integration_change", "Changed a DICOM node or webhook, or resent a delivery"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_username = models.CharField(max_length=150, blank=True, help_text="as typed, also for failed logins")
    department = models.ForeignKey(Department, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=32, choices=Action.choices, db_index=True)
    object_type = models.CharField(max_length=32, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=255, blank=True)
    method = models.CharField(max_length=8, blank=True)
    path = models.CharField(max_length=500, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["department", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_username or '-'} {self.action}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise AuditLogError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditLogError("audit events are append-only")
