"""Login lockout (django-axes): per account and per address, on the login page and the Django
admin's, ended early by a department admin, and in the audit trail."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.urls import reverse
from pytest_django.asserts import assertContains

from audit.models import AuditEvent
from tests.factories import DEFAULT_PASSWORD, DepartmentAdminFactory, UserFactory

pytestmark = pytest.mark.django_db
A = AuditEvent.Action
WRONG = "not-the-password-at-all"


def login(client, username: str, password: str, address: str = "198.51.100.7", url: str = ""):
    return client.post(url or reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address)


def fail_until_locked(client, username: str, address: str = "198.51.100.7", url: str = "") -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = login(client, username, WRONG, address, url)
        assert response.status_code in (200, 429)  # the form again; the last one is the lockout page


def test_default_limit_is_five_failures_for_fifteen_minutes():
    assert settings.AXES_FAILURE_LIMIT == 5
    assert timedelta(minutes=15) == settings.AXES_COOLOFF_TIME
    assert settings.AXES_LOCKOUT_PARAMETERS == ["username", "ip_address"]


def test_wrong_passwords_lock_the_account_and_the_right_one_is_refused(client, radiologist):
    fail_until_locked(client, radiologist.username)
    response = login(client, radiologist.username, DEFAULT_PASSWORD)
    assert response.status_code == 429
    assertContains(response, "Too many failed logins", status_code=429)
    assert "_auth_user_id" not in client.session
    # One lockout event, filed under the user's department so its admin sees it.
    event = AuditEvent.objects.get(action=A.LOCKED_OUT)
    assert event.actor_username == radiologist.username
    assert event.department_id == radiologist.department_id
    assert event.object_id == str(radiologist.pk)
    assert event.ip_address == "198.51.100.7"
    assert not AuditEvent.objects.filter(action=A.LOGIN).exists()


def test_the_account_is_locked_from_every_address(client, radiologist):
    for n in range(settings.AXES_FAILURE_LIMIT):
        login(client, radiologist.username, WRONG, address=f"203.0.113.{n + 1}")
    assert login(client, radiologist.username, DEFAULT_PASSWORD, address="203.0.113.200").status_code == 429


def test_an_address_guessing_many_accounts_is_locked_for_every_account(client, radiologist, department):
    for n in range(settings.AXES_FAILURE_LIMIT):
        login(client, f"guess{n}", WRONG, address="192.0.2.66")
    # A real user behind that address is refused; from elsewhere they log in.
    assert login(client, radiologist.username, DEFAULT_PASSWORD, address="192.0.2.66").status_code == 429
    assert login(client, radiologist.username, DEFAULT_PASSWORD, address="192.0.2.67").status_code == 302


def test_a_success_before_the_limit_starts_the_count_again(client, radiologist):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        login(client, radiologist.username, WRONG)
    assert login(client, radiologist.username, DEFAULT_PASSWORD).status_code == 302
    client.post(reverse("logout"))
    login(client, radiologist.username, WRONG)
    assert login(client, radiologist.username, DEFAULT_PASSWORD).status_code == 302


def test_django_admin_login_is_locked_too(client, django_user_model):
    django_user_model.objects.create_superuser("root", "root@example.org", "a-long-site-password")
    url = reverse("admin:login")
    fail_until_locked(client, "root", url=url)
    response = login(client, "root", "a-long-site-password", url=url)
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_the_lockout_ends_after_the_cool_off(client, radiologist):
    fail_until_locked(client, radiologist.username)
    assert login(client, radiologist.username, DEFAULT_PASSWORD).status_code == 429
    # The failures were recorded a cool-off ago (what the passing of time does to them).
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - settings.AXES_COOLOFF_TIME)
    assert login(client, radiologist.username, DEFAULT_PASSWORD).status_code == 302


def test_department_admin_sees_the_lockout_and_unlocks(client, radiologist, department_admin):
    fail_until_locked(client, radiologist.username)
    admin = client.__class__()
    admin.force_login(department_admin)
    url = reverse("user_edit", args=[radiologist.pk])
    assertContains(admin.get(url), "Locked out after repeated wrong passwords")
    assert admin.post(url, {"action": "unlock"}).status_code == 302
    assert "Locked out" not in admin.get(url).content.decode()

    assert login(client, radiologist.username, DEFAULT_PASSWORD).status_code == 302
    event = AuditEvent.objects.get(action=A.USER_UNLOCK)
    assert event.actor == department_admin
    assert event.object_id == str(radiologist.pk)


def test_only_the_users_own_department_admin_can_unlock(client, radiologist, outsider):
    fail_until_locked(client, radiologist.username)
    url = reverse("user_edit", args=[radiologist.pk])
    for someone in (outsider, DepartmentAdminFactory(username="admin_b", department=outsider.department)):
        other = client.__class__()
        other.force_login(someone)
        assert other.post(url, {"action": "unlock"}).status_code == 404
    assert login(client, radiologist.username, DEFAULT_PASSWORD, address="198.51.100.99").status_code == 429
    assert not AuditEvent.objects.filter(action=A.USER_UNLOCK).exists()


def test_unknown_usernames_are_counted_without_naming_an_account(client):
    UserFactory(username="real")
    fail_until_locked(client, "nobody-here")
    event = AuditEvent.objects.get(action=A.LOCKED_OUT)
    assert (event.actor_username, event.department_id, event.object_id) == ("nobody-here", None, "")
