"""Audit events cannot be changed or deleted: not by the model, the queryset, raw SQL on
PostgreSQL, nor the Django admin, which site admins may only read."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.urls import reverse

from audit.models import AuditEvent, AuditLogError
from audit.services import audit_record
from tests.factories import CaseFactory

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
    existing = AuditEvent.objects.count()  # reading the list is itself recorded, after it is shown
    changelist = site_admin_client.get(reverse("admin:audit_auditevent_changelist"))
    assert changelist.status_code == 200
    assert changelist.context["cl"].result_count == existing
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


# A deployment where the application's role does not own the audit table ------------------------
#
# The owner of a table can switch its triggers off, so the trigger binds only a role that does
# not own it. Migrations run as the owner; the application runs as a role granted by
# `manage.py grant_app_role` (README, "Production"). Roles belong to the PostgreSQL server, not to
# the database: created inside the test's transaction, they disappear with its rollback.


@pytest.fixture
def app_role(db) -> str:
    """A login-less role named after this test database (test runs on other databases of the same
    server cannot collide), granted by the command as a deployment would."""
    role = f"{connection.settings_dict['NAME']}_app"[:63]
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {connection.ops.quote_name(role)} NOLOGIN")
    call_command("grant_app_role", role, stdout=io.StringIO())
    return role


@contextmanager
def acting_as(role: str):
    """Run the ORM's statements as `role` on this connection (the test user is a superuser)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SET ROLE {connection.ops.quote_name(role)}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")


def refused(sql: str, params: list | None = None) -> str:
    """Run sql in a savepoint; return PostgreSQL's refusal (the test fails if it is accepted)."""
    with pytest.raises(DatabaseError) as error, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
    return str(error.value)


def test_the_owner_can_switch_the_trigger_off(event):
    """Why the application must not run as the owner: it can rewrite the trail."""
    with transaction.atomic():
        savepoint = transaction.savepoint()
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the event's foreign keys are checked now
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
            cursor.execute("UPDATE audit_auditevent SET actor_username = 'nobody' WHERE id = %s", [event.pk])
            cursor.execute("SELECT actor_username FROM audit_auditevent WHERE id = %s", [event.pk])
            assert cursor.fetchone() == ("nobody",)
        transaction.savepoint_rollback(savepoint)
    assert AuditEvent.objects.get(pk=event.pk).actor_username == "rad_a"


def test_the_app_role_appends_and_reads_but_cannot_rewrite_or_unguard_the_trail(app_role, event, radiologist):
    with acting_as(app_role):
        # What the application does every day works: recording, reading, writing other tables.
        recorded = audit_record(action=A.PATIENT_VIEW, actor=radiologist, object_type="patient", object_id=3)
        assert recorded is not None
        assert AuditEvent.objects.filter(pk=recorded.pk).exists()
        case = CaseFactory(patient__department=radiologist.department, patient__created_by=radiologist)
        case.indication = "Updated by the app role."
        case.save(update_fields=["indication"])

        statements = {
            "UPDATE": "UPDATE audit_auditevent SET actor_username = 'x' WHERE id = %s",
            "DELETE": "DELETE FROM audit_auditevent WHERE id = %s",
            "TRUNCATE": "TRUNCATE audit_auditevent",
            "DISABLE TRIGGER": "ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only",
            "DISABLE TRIGGER ALL": "ALTER TABLE audit_auditevent DISABLE TRIGGER ALL",
            "DROP TRIGGER": "DROP TRIGGER audit_event_append_only ON audit_auditevent",
            "DROP FUNCTION": "DROP FUNCTION audit_event_refuse_change()",
            "OWNER": f"ALTER TABLE audit_auditevent OWNER TO {app_role}",
            "SESSION REPLICATION": "SET session_replication_role = replica",  # skips triggers
            "FAKE MIGRATION": "INSERT INTO django_migrations (app, name, applied) VALUES ('audit', 'x', now())",
        }
        for what, sql in statements.items():
            message = refused(sql, [event.pk] if "%s" in sql else None)
            assert "permission denied" in message or "must be owner" in message, (what, message)
    assert AuditEvent.objects.get(pk=event.pk).actor_username == "rad_a"


def test_the_command_refuses_a_role_that_could_switch_the_trigger_off(db):
    owner = connection.settings_dict["USER"]  # the test runs as the owner, a superuser
    with pytest.raises(CommandError, match="superuser|owns"):
        call_command("grant_app_role", owner, stdout=io.StringIO())
    with pytest.raises(CommandError, match="no role"):
        call_command("grant_app_role", "no_such_role_xnet", stdout=io.StringIO())
    with pytest.raises(CommandError, match="plain role name"):
        call_command("grant_app_role", 'x"; DROP TABLE audit_auditevent; --', stdout=io.StringIO())


def test_the_command_refuses_a_member_of_the_owners_role(db):
    member = f"{connection.settings_dict['NAME']}_member"[:63]
    owner_group = f"{connection.settings_dict['NAME']}_owners"[:63]
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {owner_group} NOLOGIN")
        cursor.execute(f"CREATE ROLE {member} NOLOGIN IN ROLE {owner_group}")
        cursor.execute(f"ALTER TABLE audit_auditevent OWNER TO {owner_group}")
    with pytest.raises(CommandError, match="owns"):
        call_command("grant_app_role", member, stdout=io.StringIO())
