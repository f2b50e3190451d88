"""The Django admin, audited: every add, change and delete made through it is an AuditEvent,
whatever the model and whichever app registered it (ours, Django's, a library's), and so is every
list and object page a site admin reads there (patients' names and record numbers are on them).

Django's own admin log (LogEntry) has no department and names only the fields changed. These
events are append-only, filed under the department of the object (under both departments when a
change moves it from one to another), and a change records each field's value before and after.
Secrets (password hashes, token keys, TOTP keys) are named, never copied.

Every model registered on the admin site gets AuditedModelAdminMixin in front of its ModelAdmin
(AuditedAdminSite.register), so a new registration cannot forget it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib import admin
from django.core.exceptions import ObjectDoesNotExist
from django.db import models
from django.http import HttpRequest

from audit.models import AuditEvent
from audit.services import audit_record

A = AuditEvent.Action

# Where an object's department is, tried in order: patients and users carry it, the rest reach it
# through their case. The first path that resolves to a value wins.
DEPARTMENT_PATHS = (
    "department_id",
    "patient.department_id",
    "case.patient.department_id",
    "image.case.patient.department_id",
    "job.image.case.patient.department_id",
    "report.case.patient.department_id",
    "user.department_id",
)
SECRET_NAMES = ("password", "secret", "key", "token", "digest", "hash", "otp")
REDACTED = "(secret: changed)"
VALUE_MAX_CHARS = 200


def _is_secret(field_name: str) -> bool:
    name = field_name.lower()
    return any(part in name for part in SECRET_NAMES)


def department_of(obj: models.Model) -> int | None:
    """The department an object belongs to, or None (a group, a department-less site admin)."""
    if obj._meta.label_lower == "accounts.department":
        return obj.pk
    for path in DEPARTMENT_PATHS:
        value: Any = obj
        try:
            for attribute in path.split("."):
                value = getattr(value, attribute)
        except (AttributeError, ObjectDoesNotExist):
            continue
        if value is not None:
            return value
    return None


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else str(value)
    return text[:VALUE_MAX_CHARS]


def _columns(obj: models.Model) -> dict[str, Any]:
    """The object's own columns, foreign keys as ids; secrets included (kept in memory only)."""
    return {field.attname: field.value_from_object(obj) for field in obj._meta.concrete_fields}


def field_values(obj: models.Model) -> dict[str, Any]:
    """The object's own columns as they may be written to the trail: secrets left out."""
    return {name: _plain(value) for name, value in _columns(obj).items() if not _is_secret(name)}


def changes_between(before: dict[str, Any], obj: models.Model) -> dict[str, Any]:
    """Each changed column, from and to; a changed secret is only named."""
    after = _columns(obj)
    return {
        name: REDACTED if _is_secret(name) else {"from": _plain(value), "to": _plain(after.get(name))}
        for name, value in before.items()
        if after.get(name) != value
    }


def _object_id(obj: models.Model) -> str:
    # A model whose primary key is itself a secret (a token key) is named by type only.
    return "" if _is_secret(obj._meta.pk.name) else str(obj.pk)


def _base_detail(obj: models.Model, message: Any) -> dict[str, Any]:
    detail: dict[str, Any] = {"model": obj._meta.label_lower, "via": "admin"}
    if not _is_secret(obj._meta.pk.name):
        detail["repr"] = _plain(str(obj))
    if message:
        detail["message"] = message
    return detail


class AuditedModelAdminMixin:
    """Records the admin's add, change and delete log calls as audit events; before a change is
    saved, it keeps the row as the database has it, so the event can say what changed. Reads of
    its list and object pages are recorded too."""

    _BEFORE = "_xnet_admin_before"

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        response = super().changelist_view(request, extra_context)
        if request.method == "GET" and response.status_code == 200:
            query = {key: value[:100] for key, value in request.GET.items() if value}
            detail = {"model": self.model._meta.label_lower, "via": "admin", "query": query}
            audit_record(
                action=A.ADMIN_VIEW,
                actor=request.user,
                object_type=self.model._meta.label_lower,
                detail=detail,
                request=request,
            )
        return response

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> Any:
        response = super().change_view(request, object_id, form_url, extra_context)
        if request.method == "GET" and response.status_code == 200:
            obj = (getattr(response, "context_data", None) or {}).get("original")
            if obj is not None:
                _record(request, A.ADMIN_VIEW, obj, _base_detail(obj, ""), [department_of(obj)])
        return response

    def save_model(self, request: HttpRequest, obj: models.Model, form: Any, change: bool) -> None:
        # Called by the change form and by the changelist's editable columns alike, before saving.
        if change and obj.pk is not None:
            stored = type(obj)._base_manager.filter(pk=obj.pk).first()
            if stored is not None:
                snapshots = request.__dict__.setdefault(self._BEFORE, {})
                snapshots[(obj._meta.label_lower, obj.pk)] = (_columns(stored), department_of(stored))
        super().save_model(request, obj, form, change)

    def log_addition(self, request: HttpRequest, obj: models.Model, message: Any) -> Any:
        entry = super().log_addition(request, obj, message)
        department_id = department_of(obj)
        _record(request, A.ADMIN_ADD, obj, _base_detail(obj, message), [department_id])
        return entry

    def log_change(self, request: HttpRequest, obj: models.Model, message: Any) -> Any:
        entry = super().log_change(request, obj, message)
        detail = _base_detail(obj, message)
        after_department = department_of(obj)
        departments = [after_department]
        before = request.__dict__.get(self._BEFORE, {}).pop((obj._meta.label_lower, obj.pk), None)
        if before is not None:
            columns_before, before_department = before
            detail["changes"] = changes_between(columns_before, obj)
            if before_department != after_department:
                detail["from_department"] = before_department
                departments.append(before_department)
        _record(request, A.ADMIN_CHANGE, obj, detail, departments)
        return entry

    def log_deletions(self, request: HttpRequest, queryset: Iterable[models.Model]) -> Any:
        # Called before the objects are deleted: they can still say where they belonged.
        objects = list(queryset)
        entries = super().log_deletions(request, objects)
        for obj in objects:
            detail = {**_base_detail(obj, ""), "values": field_values(obj)}
            department_id = department_of(obj)
            if obj._meta.label_lower == "accounts.department":
                # An event filed under the department would keep it from being deleted (PROTECT).
                department_id = None
            _record(request, A.ADMIN_DELETE, obj, detail, [department_id])
        return entries


def _record(
    request: HttpRequest, action: str, obj: models.Model, detail: dict[str, Any], departments: list[int | None]
) -> None:
    """One event per department concerned: each department's admin sees what touched theirs."""
    for department_id in dict.fromkeys(departments):
        audit_record(
            action=action,
            actor=request.user,
            department_id=department_id,
            object_type=obj._meta.label_lower,
            object_id=_object_id(obj),
            detail=detail,
            request=request,
        )


class AuditedAdminSite(admin.AdminSite):
    """The default admin site (audit.admin_apps.AuditedAdminConfig): every registration is audited."""

    def register(self, model_or_iterable: Any, admin_class: type | None = None, **options: Any) -> None:
        admin_class = admin_class or admin.ModelAdmin
        if not issubclass(admin_class, AuditedModelAdminMixin):
            admin_class = type(
                admin_class.__name__,
                (AuditedModelAdminMixin, admin_class),
                {"__module__": admin_class.__module__, "__doc__": admin_class.__doc__},
            )
        super().register(model_or_iterable, admin_class, **options)
