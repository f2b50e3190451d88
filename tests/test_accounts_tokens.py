"""API tokens: stored hashed, named, expiring, shown once; created and revoked by department
admins; ended by a password change or a deactivation; wrong keys throttled per address."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from pytest_django.asserts import assertContains, assertNotContains
from rest_framework.test import APIClient

from accounts.models import ApiToken
from audit.models import AuditEvent
from tests.factories import DEFAULT_PASSWORD, DepartmentAdminFactory, api_token_for

pytestmark = pytest.mark.django_db
A = AuditEvent.Action
CASES = "/api/v1/cases/"
NEW_PASSWORD = "a-new-long-passphrase"


def client_with(key: str, address: str = "192.0.2.1") -> APIClient:
    api = APIClient(REMOTE_ADDR=address)
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return api


def create_on_page(admin_client, user, name: str = "PACS bridge", days: int = 30):
    return admin_client.post(reverse("token_list"), {"name": name, "user": user.pk, "days": days})


def test_admin_creates_a_token_whose_key_is_shown_once_and_stored_hashed(admin_client, radiologist):
    response = create_on_page(admin_client, radiologist)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    key = response.context["new_key"]
    assertContains(response, key)

    token = ApiToken.objects.get()
    assert (token.name, token.user, token.prefix) == ("PACS bridge", radiologist, key[:8])
    assert abs(token.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    # The key is nowhere in the database: not in the token's row, not in the audit trail.
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_apitoken")
        assert not any(key in str(value) for value in cursor.fetchone())
    assert key not in str(list(AuditEvent.objects.values_list("detail", flat=True)))
    assert AuditEvent.objects.filter(action=A.API_TOKEN_CREATE, object_id=str(radiologist.pk)).count() == 1

    # It works, and the list shows its prefix only.
    assert client_with(key).get(CASES).status_code == 200
    listing = admin_client.get(reverse("token_list"))
    assertContains(listing, key[:8])
    assertNotContains(listing, key)


def test_the_django_admin_shows_the_prefix_only(client, django_user_model, radiologist):
    _, key = api_token_for(radiologist, name="RIS bridge")
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.org", "a-long-site-password"))
    page = client.get(reverse("admin:accounts_apitoken_changelist"))
    assertContains(page, "RIS bridge")
    assertContains(page, key[:8])
    assertNotContains(page, key)


def test_expired_token_is_refused(radiologist):
    token, key = api_token_for(radiologist)
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client_with(key).get(CASES)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Token expired."


def test_the_lifetime_is_capped(admin_client, radiologist, settings):
    response = create_on_page(admin_client, radiologist, days=settings.XNET_API_TOKEN_MAX_DAYS + 1)
    assert response.status_code == 400
    assert not ApiToken.objects.exists()


def test_admin_revokes_a_token(admin_client, radiologist):
    token, key = api_token_for(radiologist)
    assert admin_client.post(reverse("token_revoke", args=[token.pk])).status_code == 302
    assert client_with(key).get(CASES).status_code == 401
    assert AuditEvent.objects.get(action=A.API_TOKEN_REVOKE).detail["prefix"] == key[:8]


def test_other_departments_and_radiologists_cannot_see_or_revoke(client, radiologist, outsider):
    token, key = api_token_for(radiologist)
    client.force_login(DepartmentAdminFactory(username="admin_b", department=outsider.department))
    assertNotContains(client.get(reverse("token_list")), key[:8])
    assert client.post(reverse("token_revoke", args=[token.pk])).status_code == 404
    # Nor create one for another department's user.
    assert create_on_page(client, radiologist).status_code == 400
    client.force_login(radiologist)
    assert client.get(reverse("token_list")).status_code == 403
    assert client.post(reverse("token_revoke", args=[token.pk])).status_code == 404
    assert client_with(key).get(CASES).status_code == 200


def test_a_password_change_revokes_the_users_tokens(client, radiologist):
    _, key = api_token_for(radiologist)
    client.force_login(radiologist)
    response = client.post(
        reverse("password_change"),
        {
            "old_password": DEFAULT_PASSWORD,
            "new_password1": "a-new-long-passphrase",
            "new_password2": "a-new-long-passphrase",
        },
    )
    assert response.status_code == 302
    response = client_with(key).get(CASES)
    assert response.status_code == 401
    assert "password changed" in response.json()["error"]["message"]


def test_deactivation_revokes_and_reactivation_does_not_bring_them_back(client, department_admin, radiologist):
    _, key = api_token_for(radiologist)
    client.force_login(department_admin)
    url = reverse("user_edit", args=[radiologist.pk])
    client.post(url, {"action": "deactivate"})
    client.post(url, {"action": "reactivate"})
    radiologist.refresh_from_db()
    assert radiologist.is_active
    response = client_with(key).get(CASES)
    assert response.status_code == 401
    assert "deactivated" in response.json()["error"]["message"]


def test_wrong_keys_from_one_address_are_throttled(radiologist, settings):
    settings.XNET_API_TOKEN_FAILURE_LIMIT = 3
    _, key = api_token_for(radiologist)
    for _ in range(3):
        assert client_with("wrong-key", "203.0.113.5").get(CASES).status_code == 401
    response = client_with(key, "203.0.113.5").get(CASES)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"
    assert client_with(key, "203.0.113.6").get(CASES).status_code == 200


def test_last_use_is_recorded(radiologist):
    token, key = api_token_for(radiologist)
    assert token.last_used_at is None
    client_with(key).get(CASES)
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_command_line_token(radiologist):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", radiologist.username, "--name", "RIS", "--days", "7", stdout=out, stderr=err)
    key = out.getvalue().strip()
    assert client_with(key).get(CASES).status_code == 200
    assert ApiToken.objects.get().name == "RIS"
    call_command("create_api_token", radiologist.username, "--revoke-all", stdout=io.StringIO())
    assert client_with(key).get(CASES).status_code == 401


def test_old_clear_text_tokens_are_moved_and_hashed(radiologist):
    """The data migration, on an authtoken table as DRF left it."""
    from importlib import import_module

    from django.apps import apps

    migration = import_module("accounts.migrations.0003_hash_old_drf_tokens")
    old_key = "0123456789abcdef0123456789abcdef01234567"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamptz NOT NULL, user_id bigint)"
        )
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, now(), %s)", [old_key, radiologist.pk])
    with connection.schema_editor() as editor:
        migration.forwards(apps, editor)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM authtoken_token")
        assert cursor.fetchone() == (0,)
    token = ApiToken.objects.get()
    assert token.prefix == old_key[:8]
    assert old_key not in token.key_hash
    assert client_with(old_key).get(CASES).status_code == 200
