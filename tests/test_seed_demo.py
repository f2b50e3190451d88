"""`manage.py seed_demo`: the accounts `./scripts/run.sh` prints must exist and work, run after run."""

from __future__ import annotations

import io

import pytest
from django.contrib import auth
from django.core.management import CommandError, call_command
from django.test import RequestFactory
from django.urls import reverse

from accounts.management.commands.seed_demo import DEMO_ACCOUNTS, DEMO_DEPARTMENT
from accounts.models import Department, User

pytestmark = pytest.mark.django_db

PASSWORDS = {account.username: account.default_password for account in DEMO_ACCOUNTS}


def authenticate(**credentials):
    """Django's authenticate with the login page's request (the lockout check needs one)."""
    return auth.authenticate(RequestFactory().post(reverse("login")), **credentials)


@pytest.fixture(autouse=True)
def _fast_hasher(settings, monkeypatch):
    # run.sh runs it with DEBUG on (pytest-django turns DEBUG off). The hashing algorithm is not
    # under test; PBKDF2 would cost seconds per run here.
    settings.DEBUG = True
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    for account in DEMO_ACCOUNTS:
        monkeypatch.delenv(account.env_var, raising=False)


def seed(*args: str) -> str:
    out = io.StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def test_creates_department_accounts_with_roles_and_prints_credentials():
    output = seed()

    department = Department.objects.get(name=DEMO_DEPARTMENT)
    radiologist = User.objects.get(username="radiologist")
    dept_admin = User.objects.get(username="deptadmin")
    site_admin = User.objects.get(username="admin")
    assert (radiologist.department, radiologist.role) == (department, User.Role.RADIOLOGIST)
    assert not radiologist.is_department_admin
    assert not radiologist.is_staff
    assert not radiologist.is_superuser
    assert (dept_admin.department, dept_admin.role) == (department, User.Role.DEPARTMENT_ADMIN)
    assert dept_admin.is_department_admin
    assert dept_admin.can_manage(radiologist)
    assert site_admin.is_superuser
    assert site_admin.is_staff
    assert site_admin.department is None
    for username, password in PASSWORDS.items():
        assert f"username {username}" in output
        assert password in output
        assert authenticate(username=username, password=password) is not None


def test_running_twice_changes_nothing():
    seed()
    first = {u.username: (u.pk, u.password, u.department_id, u.role) for u in User.objects.all()}

    output = seed()

    assert Department.objects.filter(name=DEMO_DEPARTMENT).count() == 1
    assert {u.username: (u.pk, u.password, u.department_id, u.role) for u in User.objects.all()} == first
    for password in PASSWORDS.values():
        assert password in output


def test_printed_credentials_log_in_through_the_login_page(client):
    seed()

    response = client.post(
        reverse("login"), {"username": "radiologist", "password": PASSWORDS["radiologist"]}, follow=False
    )

    assert response.status_code == 302
    assert response.url == reverse("worklist")
    assert client.session["_auth_user_id"] == str(User.objects.get(username="radiologist").pk)


def test_rerun_keeps_a_password_the_user_changed_until_reset_is_asked_for():
    seed()
    radiologist = User.objects.get(username="radiologist")
    radiologist.set_password("my-own-secret-passphrase")
    radiologist.save()

    output = seed()

    assert authenticate(username="radiologist", password="my-own-secret-passphrase") is not None
    assert authenticate(username="radiologist", password=PASSWORDS["radiologist"]) is None
    assert "changed since it was seeded" in output
    assert PASSWORDS["deptadmin"] in output

    seed("--reset-passwords")

    assert authenticate(username="radiologist", password=PASSWORDS["radiologist"]) is not None
    assert authenticate(username="radiologist", password="my-own-secret-passphrase") is None


def test_rerun_repairs_a_demo_account_that_was_broken():
    seed()
    User.objects.filter(username="deptadmin").update(role=User.Role.RADIOLOGIST, is_active=False)

    seed()

    dept_admin = User.objects.get(username="deptadmin")
    assert dept_admin.is_active
    assert dept_admin.role == User.Role.DEPARTMENT_ADMIN


def test_password_from_environment_is_used_and_printed(monkeypatch):
    monkeypatch.setenv("XNET_DEMO_RADIOLOGIST_PASSWORD", "ward-seven-lightbox")

    output = seed()

    assert "ward-seven-lightbox" in output
    assert authenticate(username="radiologist", password="ward-seven-lightbox") is not None
    assert authenticate(username="radiologist", password=PASSWORDS["radiologist"]) is None


def test_weak_password_from_environment_is_refused_and_nothing_is_written(monkeypatch):
    monkeypatch.setenv("XNET_DEMO_ADMIN_PASSWORD", "123")

    with pytest.raises(CommandError, match="XNET_DEMO_ADMIN_PASSWORD"):
        seed()

    assert not User.objects.exists()
    assert not Department.objects.exists()


def test_refuses_without_debug_unless_allowed(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="DEBUG is off"):
        seed()
    assert not User.objects.exists()

    seed("--allow-production")
    assert User.objects.count() == len(DEMO_ACCOUNTS)
