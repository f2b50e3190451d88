"""API token use is recorded, at most once per token per XNET_AUDIT_TOKEN_USE_INTERVAL."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.urls import reverse

from audit.models import AuditEvent
from tests.conftest import token_client

pytestmark = pytest.mark.django_db
A = AuditEvent.Action


@pytest.fixture(autouse=True)
def _empty_throttle():
    cache.clear()
    yield
    cache.clear()


def token_events(user) -> int:
    return AuditEvent.objects.filter(action=A.API_TOKEN_USE, actor=user).count()


def test_token_use_is_recorded_with_user_department_and_address(api, radiologist):
    response = api.get(reverse("api:case-list"), REMOTE_ADDR="192.0.2.10", HTTP_USER_AGENT="ris-bridge/2.1")
    assert response.status_code == 200
    event = AuditEvent.objects.get(action=A.API_TOKEN_USE)
    assert event.actor == radiologist
    assert event.actor_username == "rad_a"
    assert event.department_id == radiologist.department_id
    assert event.ip_address == "192.0.2.10"
    assert event.user_agent == "ris-bridge/2.1"
    assert event.object_type == "user"
    assert event.object_id == str(radiologist.pk)
    assert event.path == reverse("api:case-list")
    assert "key" not in str(event.detail).lower()  # the secret is never written down


def test_polling_is_recorded_once_per_interval(api, radiologist, settings):
    settings.XNET_AUDIT_TOKEN_USE_INTERVAL = 300
    for _ in range(5):
        assert api.get(reverse("api:case-list")).status_code == 200
    assert token_events(radiologist) == 1


def test_each_token_has_its_own_throttle(api, outsider_api, radiologist, outsider):
    for _ in range(3):
        api.get(reverse("api:case-list"))
        outsider_api.get(reverse("api:case-list"))
    assert token_events(radiologist) == 1
    assert token_events(outsider) == 1


def test_a_new_interval_records_again(api, radiologist):
    api.get(reverse("api:case-list"))
    cache.clear()  # what the interval's end does to the throttle key
    api.get(reverse("api:case-list"))
    assert token_events(radiologist) == 2


def test_interval_zero_records_every_use(api, radiologist, settings):
    settings.XNET_AUDIT_TOKEN_USE_INTERVAL = 0
    for _ in range(3):
        api.get(reverse("api:case-list"))
    assert token_events(radiologist) == 3


def test_session_and_bad_tokens_record_no_token_use(rad_client, radiologist, client):
    assert rad_client.get(reverse("api:case-list")).status_code == 200
    assert client.get(reverse("api:case-list"), HTTP_AUTHORIZATION="Token not-a-real-key").status_code == 401
    assert not AuditEvent.objects.filter(action=A.API_TOKEN_USE).exists()


def test_deactivated_users_token_is_refused_and_not_recorded(radiologist):
    api = token_client(radiologist)
    radiologist.is_active = False
    radiologist.save()
    assert api.get(reverse("api:case-list")).status_code == 401
    assert not AuditEvent.objects.filter(action=A.API_TOKEN_USE).exists()
