"""Audit events cannot be changed or deleted: not by the model, the queryset, raw SQL on
PostgreSQL, nor the Django admin, which site admins may only read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from audit.models import AuditEvent, AuditLogError
from audit.services import audit_record

pytestmark = pytest.mark.django_db
A = AuditEvent.Action
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def event(radiologist):
    return audit_record(action=A.CASE_VIEW, actor=radiologist, object_type="case", object_id=7)


def test_model_refuses_change_and_delete(event):
    event.action = A.LOGOUT
    with pytest.raises(AuditLogError):
        event.save()
    with pytest.raises(AuditLogError):
        event.delete()
    assert AuditEvent.objects.get(pk=event.pk).action == A.CASE_VIEW


def test_queryset_refuses_update_and_delete(event):
    with pytest.raises(AuditLogError):
        AuditEvent.objects.filter(pk=event.pk).update(action=A.LOGOUT)
    with pytest.raises(AuditLogError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.filter(pk=event.pk, action=A.CASE_VIEW).exists()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditevent SET actor_username = 'someone else' WHERE id = %s",
        "DELETE FROM audit_auditevent WHERE id = %s",
    ],
)
def test_database_refuses_raw_update_and_delete(event, sql):
    assert connection.vendor == "postgresql"  # the suite runs on the production database
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, [event.pk])
    assert AuditEvent.objects.get(pk=event.pk).actor_username == "rad_a"


def test_inserts_still_work_under_the_trigger(radiologist):
    for n in range(3):
        audit_record(action=A.PATIENT_VIEW, actor=radiologist, object_type="patient", object_id=n)
    assert AuditEvent.objects.filter(action=A.PATIENT_VIEW).count() == 3


def test_migrations_apply_on_sqlite_without_the_trigger(tmp_path):
    """The embedded default database migrates: the trigger is PostgreSQL-only."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "XNET_VAR_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "audit", "--no-input"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Applying audit.0002_append_only_trigger... OK" in result.stdout


# The Django admin ------------------------------------------------------------------------


@pytest.fixture
def site_admin_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.org", "x-very-long-pw"))
    return client


def test_site_admin_reads_every_departments_events(site_admin_client, event, outsider):
    other = audit_record(action=A.LOGIN, actor=outsider, object_type="user", object_id=outsider.pk)
    changelist = site_admin_client.get(reverse("admin:audit_auditevent_changelist"))
    assert changelist.status_code == 200
    assert changelist.context["cl"].result_count == AuditEvent.objects.count()
    assert {event.pk, other.pk} <= {e.pk for e in changelist.context["cl"].result_list}
    detail = site_admin_client.get(reverse("admin:audit_auditevent_change", args=[event.pk]))
    assert detail.status_code == 200
    assert b"Save" not in detail.content  # a read-only view


def test_admin_cannot_add_change_or_delete(site_admin_client, event):
    assert site_admin_client.get(reverse("admin:audit_auditevent_add")).status_code == 403
    assert site_admin_client.get(reverse("admin:audit_auditevent_delete", args=[event.pk])).status_code == 403
    site_admin_client.post(reverse("admin:audit_auditevent_change", args=[event.pk]), {"action": A.LOGOUT})
    assert AuditEvent.objects.get(pk=event.pk).action == A.CASE_VIEW
    bulk = site_admin_client.post(
        reverse("admin:audit_auditevent_changelist"),
        {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_department_admin_has_no_django_admin(client, department_admin):
    client.force_login(department_admin)
    response = client.get(reverse("admin:audit_auditevent_changelist"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
