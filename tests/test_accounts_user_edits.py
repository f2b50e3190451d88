"""Department admins reset a user's password and correct names and e-mails; passwords are at
least 12 characters; sessions end after the idle limit and when the browser closes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.urls import reverse
from django.utils import timezone
from pytest_django.asserts import assertContains

from accounts.middleware import SEEN_KEY, TOUCH_EVERY_SECONDS
from audit.models import AuditEvent
from tests.factories import DEFAULT_PASSWORD, DepartmentAdminFactory, UserFactory

pytestmark = pytest.mark.django_db
A = AuditEvent.Action
NEW_PASSWORD = "mediastinum-wide-42"


@pytest.fixture
def colleague(department):
    return UserFactory(username="dr_who", first_name="John", last_name="Smith", department=department)


def logs_in(client, username: str, password: str) -> bool:
    return client.post(reverse("login"), {"username": username, "password": password}).status_code == 302


def test_admin_sets_a_new_password_for_a_user_who_forgot_theirs(admin_client, colleague, client):
    other = client.__class__()
    other.force_login(colleague)
    url = reverse("user_edit", args=[colleague.pk])
    response = admin_client.post(url, {"action": "password", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 302
    assert other.get(reverse("worklist")).status_code == 302  # their open session has ended
    assert logs_in(client.__class__(), "dr_who", NEW_PASSWORD)
    assert not logs_in(client.__class__(), "dr_who", DEFAULT_PASSWORD)
    event = AuditEvent.objects.get(action=A.PASSWORD_RESET)
    assert event.object_id == str(colleague.pk)
    assert NEW_PASSWORD not in str(event.detail)


def test_a_short_password_is_refused_with_a_reason(admin_client, colleague):
    url = reverse("user_edit", args=[colleague.pk])
    short = "a1b2c3d4e5f"  # 11 characters
    response = admin_client.post(url, {"action": "password", "password1": short, "password2": short})
    assert response.status_code == 400
    assertContains(response, "at least 12 characters", status_code=400)
    colleague.refresh_from_db()
    assert colleague.check_password(DEFAULT_PASSWORD)


def test_minimum_length_is_twelve_everywhere(admin_client, radiologist):
    short = "a1b2c3d4e5f"
    response = admin_client.post(
        reverse("user_create"),
        {"username": "new_rad", "role": "radiologist", "password1": short, "password2": short},
    )
    assertContains(response, "at least 12 characters", status_code=400)
    own = admin_client.__class__()
    own.force_login(radiologist)
    response = own.post(
        reverse("password_change"),
        {"old_password": DEFAULT_PASSWORD, "new_password1": short, "new_password2": short},
    )
    assertContains(response, "at least 12 characters")


def test_admin_corrects_names_and_email(admin_client, colleague):
    url = reverse("user_edit", args=[colleague.pk])
    data = {"action": "profile", "first_name": "Jon", "last_name": "Smith", "email": "jon.smith@hospital.example"}
    assert admin_client.post(url, data).status_code == 302
    colleague.refresh_from_db()
    assert (colleague.first_name, colleague.email) == ("Jon", "jon.smith@hospital.example")
    event = AuditEvent.objects.get(action=A.USER_UPDATE)
    assert event.detail["changed"] == {
        "first_name": {"from": "John", "to": "Jon"},
        "email": {"from": "dr_who@hospital.example", "to": "jon.smith@hospital.example"},
    }


def test_a_bad_email_is_refused(admin_client, colleague):
    url = reverse("user_edit", args=[colleague.pk])
    response = admin_client.post(
        url, {"action": "profile", "first_name": "J", "last_name": "S", "email": "not-an-email"}
    )
    assert response.status_code == 400
    colleague.refresh_from_db()
    assert colleague.first_name == "John"


def test_another_departments_admin_cannot_edit_or_reset(client, colleague, other_department):
    client.force_login(DepartmentAdminFactory(username="admin_b", department=other_department))
    url = reverse("user_edit", args=[colleague.pk])
    assert (
        client.post(url, {"action": "password", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}).status_code
        == 404
    )
    assert client.post(url, {"action": "profile", "first_name": "X", "last_name": "", "email": ""}).status_code == 404
    colleague.refresh_from_db()
    assert colleague.check_password(DEFAULT_PASSWORD)
    assert colleague.first_name == "John"


# Sessions ----------------------------------------------------------------------------------


def session_row(client) -> Session:
    return Session.objects.get(session_key=client.cookies[settings.SESSION_COOKIE_NAME].value)


def test_session_cookie_ends_with_the_browser_and_the_server_side_after_30_idle_minutes(client, radiologist):
    assert logs_in(client, radiologist.username, DEFAULT_PASSWORD)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    assert not cookie["expires"]
    assert not cookie["max-age"]
    assert settings.SESSION_COOKIE_AGE == 30 * 60
    left = session_row(client).expire_date - timezone.now()
    assert timedelta(minutes=29) < left <= timedelta(minutes=30)


def test_an_idle_session_is_logged_out(client, radiologist):
    assert logs_in(client, radiologist.username, DEFAULT_PASSWORD)
    Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))  # 30 minutes without a request
    response = client.get(reverse("worklist"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_activity_moves_the_idle_limit_forward(client, radiologist):
    assert logs_in(client, radiologist.username, DEFAULT_PASSWORD)
    # The user was last seen a while ago and the session has a minute left.
    session = client.session
    session[SEEN_KEY] -= TOUCH_EVERY_SECONDS
    session.save()
    Session.objects.update(expire_date=timezone.now() + timedelta(minutes=1))
    assert client.get(reverse("worklist")).status_code == 200
    left = session_row(client).expire_date - timezone.now()
    assert left > timedelta(minutes=29)


def test_a_session_from_before_the_idle_limit_is_put_on_it(client, radiologist):
    assert logs_in(client, radiologist.username, DEFAULT_PASSWORD)
    session = client.session
    del session[SEEN_KEY]
    session.save()
    Session.objects.update(expire_date=timezone.now() + timedelta(days=14))  # the old default age
    assert client.get(reverse("worklist")).status_code == 200
    left = session_row(client).expire_date - timezone.now()
    assert timedelta(minutes=29) < left <= timedelta(minutes=30)


def test_requests_within_a_minute_do_not_rewrite_the_session(client, radiologist):
    assert logs_in(client, radiologist.username, DEFAULT_PASSWORD)
    before = session_row(client).expire_date
    assert client.get(reverse("worklist")).status_code == 200
    assert session_row(client).expire_date == before
