"""The audit log page: a department admin reads their own department's events, filtered and
paginated, newest first. Radiologists cannot open it; no admin sees another department's."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django.asserts import assertContains, assertNotContains

from audit.models import AuditEvent
from audit.services import audit_record
from tests.factories import DepartmentAdminFactory, UserFactory

pytestmark = pytest.mark.django_db
A = AuditEvent.Action


@pytest.fixture
def admin_client(client, department_admin):
    client.force_login(department_admin)
    return client


def event_at(when: datetime, **kwargs) -> AuditEvent:
    event = AuditEvent(created_at=when, **kwargs)
    event.save()
    return event


def listed(response) -> list[AuditEvent]:
    return list(response.context["page"].object_list)


@pytest.fixture
def history(radiologist, outsider):
    """Department A: three events by rad_a and one by a colleague; department B: one."""
    colleague = UserFactory(username="rad_c", department=radiologist.department)
    now = timezone.now()
    dept_a = radiologist.department_id
    return {
        "old_view": event_at(
            now - timedelta(days=10),
            action=A.CASE_VIEW,
            actor=radiologist,
            actor_username="rad_a",
            department_id=dept_a,
            object_type="case",
            object_id="11",
        ),
        "upload": event_at(
            now - timedelta(days=2),
            action=A.UPLOAD,
            actor=radiologist,
            actor_username="rad_a",
            department_id=dept_a,
            object_type="case",
            object_id="12",
        ),
        "patient": event_at(
            now - timedelta(hours=1),
            action=A.PATIENT_VIEW,
            actor=colleague,
            actor_username="rad_c",
            department_id=dept_a,
            object_type="patient",
            object_id="5",
        ),
        "failed": event_at(
            now - timedelta(minutes=5),
            action=A.LOGIN_FAILED,
            actor_username="rad_a",
            department_id=dept_a,
            ip_address="203.0.113.66",
        ),
        "foreign": event_at(
            now - timedelta(minutes=1),
            action=A.CASE_VIEW,
            actor=outsider,
            actor_username="rad_b",
            department_id=outsider.department_id,
            object_type="case",
            object_id="99",
        ),
    }


def test_admin_sees_own_department_newest_first(admin_client, history):
    response = admin_client.get(reverse("audit_log"))
    assert response.status_code == 200
    events = [e for e in listed(response) if e.action != A.LOGIN]  # force_login's own event is there too
    assert events == [history["failed"], history["patient"], history["upload"], history["old_view"]]
    assertContains(response, "203.0.113.66")
    assertContains(response, f'href="{reverse("case_detail", args=[12])}"')
    assertContains(response, "(not logged in)")
    assertNotContains(response, "rad_b")


def test_another_departments_admin_sees_none_of_it(client, outsider, history):
    other_admin = DepartmentAdminFactory(username="admin_b", department=outsider.department)
    client.force_login(other_admin)
    events = listed(client.get(reverse("audit_log")))
    assert history["foreign"] in events
    assert not [e for e in events if e.department_id != outsider.department_id]


def test_radiologist_is_forbidden_like_on_the_user_pages(rad_client, history):
    assert rad_client.get(reverse("audit_log")).status_code == 403
    assert rad_client.get(reverse("user_list")).status_code == 403


def test_anonymous_is_sent_to_login(client):
    response = client.get(reverse("audit_log"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_site_admin_has_no_department_log(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.org", "x-very-long-pw"))
    assert client.get(reverse("audit_log")).status_code == 403


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"action": "upload"}, ["upload"]),
        ({"user": "RAD_C"}, ["patient"]),
        ({"object_type": "case"}, ["upload", "old_view"]),
        ({"object_type": "case", "object_id": "11"}, ["old_view"]),
        ({"action": "login_failed", "user": "rad_a"}, ["failed"]),
    ],
)
def test_filters(admin_client, history, params, expected):
    response = admin_client.get(reverse("audit_log"), params)
    assert response.status_code == 200
    assert listed(response) == [history[name] for name in expected]


def test_date_range_filter(admin_client, history):
    today = timezone.localdate()
    response = admin_client.get(
        reverse("audit_log"),
        {"date_from": (today - timedelta(days=3)).isoformat(), "date_to": (today - timedelta(days=1)).isoformat()},
    )
    assert listed(response) == [history["upload"]]


def test_bad_filters_are_a_400_with_the_reason(admin_client, history):
    today = timezone.localdate()
    response = admin_client.get(
        reverse("audit_log"), {"date_from": today.isoformat(), "date_to": (today - timedelta(days=5)).isoformat()}
    )
    assert response.status_code == 400
    assertContains(response, "The start date is after the end date.", status_code=400)
    response = admin_client.get(reverse("audit_log"), {"action": "delete_everything", "user": "rad_c"})
    assert response.status_code == 400
    assertContains(response, "Select a valid choice", status_code=400)
    assert listed(response) == [history["patient"]]  # the valid filter still applies


def test_pagination(admin_client, radiologist):
    for n in range(60):
        audit_record(action=A.CASE_VIEW, actor=radiologist, object_type="case", object_id=n)
    first = admin_client.get(reverse("audit_log"), {"action": "case_view"})
    assert len(listed(first)) == 50
    assert listed(first)[0].object_id == "59"
    assertContains(first, "Page 1 of 2")
    second = admin_client.get(reverse("audit_log"), {"action": "case_view", "page": 2})
    assert [e.object_id for e in listed(second)] == [str(n) for n in range(9, -1, -1)]


def test_nav_links_by_role(department_admin, rad_client):
    admin_client = Client()
    admin_client.force_login(department_admin)
    admin_page = admin_client.get(reverse("worklist"))
    assertContains(admin_page, f'href="{reverse("audit_log")}"')
    assertContains(admin_page, f'href="{reverse("dashboard")}"')
    rad_page = rad_client.get(reverse("worklist"))
    assertNotContains(rad_page, f'href="{reverse("audit_log")}"')
    assertContains(rad_page, f'href="{reverse("dashboard")}"')
