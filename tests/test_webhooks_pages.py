"""The webhooks page and API: department admins register, deactivate and read the delivery log of
their own department's webhooks only; the secret shows once; others get 403 or 404."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.utils import timezone

from tests.conftest import token_client
from tests.factories import DepartmentAdminFactory, TOTPDeviceFactory
from webhooks import services
from webhooks.models import Delivery, Event, Subscription

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _loopback(settings):
    settings.XNET_WEBHOOK_ALLOW_LOOPBACK = True


@pytest.fixture
def other_admin(other_department):
    admin = DepartmentAdminFactory(username="admin_b", department=other_department)
    TOTPDeviceFactory(user=admin)
    return admin


@pytest.fixture
def subscription(department_admin) -> Subscription:
    subscription, _ = services.subscription_create(
        created_by=department_admin, url="http://127.0.0.1:9/ehr", events=[Event.REPORT_SIGNED]
    )
    return subscription


@pytest.fixture
def delivery(subscription) -> Delivery:
    return Delivery.objects.create(
        subscription=subscription,
        event=Event.REPORT_SIGNED,
        object_key="report:7",
        payload={},
        status=Delivery.Status.RETRYING,
        attempts=2,
        last_status_code=500,
        last_error="HTTP 500",
        next_attempt_at=timezone.now(),
        last_attempt_at=timezone.now(),
    )


def delivery_row(html: str, delivery: Delivery) -> str:
    match = re.search(rf'<tr data-delivery="{delivery.pk}">(.*?)</tr>', html, re.DOTALL)
    assert match, html
    return match.group(1)


def cell(row: str, css_class: str) -> str:
    match = re.search(rf'<td class="{css_class}">(.*?)</td>', row, re.DOTALL)
    assert match, row
    return match.group(1).strip()


def test_register_shows_the_secret_once(admin_client, department_admin):
    response = admin_client.post(
        "/webhooks/",
        {"url": "http://127.0.0.1:9/ehr", "events": ["job.finished", "report.signed"], "description": "EHR"},
    )
    assert response.status_code == 200
    subscription = Subscription.objects.get()
    assert (subscription.department, subscription.events) == (
        department_admin.department,
        ["job.finished", "report.signed"],
    )
    html = response.content.decode()
    shown = re.search(r'id="new-webhook-secret">([^<]+)<', html).group(1)
    assert shown == subscription.secret
    again = admin_client.get("/webhooks/").content.decode()
    assert "http://127.0.0.1:9/ehr" in again
    assert subscription.secret not in again


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://10.0.0.8/ehr", "private"),
        ("http://93.184.215.14/ehr", "https"),
        ("https://169.254.169.254/", "link-local"),
    ],
)
def test_register_refusals(admin_client, url, message):
    response = admin_client.post("/webhooks/", {"url": url, "events": ["job.finished"]})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Subscription.objects.exists()


def test_register_needs_an_event(admin_client):
    response = admin_client.post("/webhooks/", {"url": "http://127.0.0.1:9/ehr"})
    assert response.status_code == 400
    assert not Subscription.objects.exists()


def test_radiologists_cannot_manage_webhooks(rad_client, subscription):
    assert rad_client.get("/webhooks/").status_code == 403
    assert rad_client.post("/webhooks/", {"url": "http://127.0.0.1:9/x", "events": ["job.finished"]}).status_code == 403
    assert rad_client.post(f"/webhooks/{subscription.pk}/deactivate/").status_code == 403
    assert Subscription.objects.get().is_active
    assert Subscription.objects.count() == 1


def test_other_departments_cannot_see_or_edit(client, other_admin, subscription, delivery):
    client.force_login(other_admin)
    html = client.get("/webhooks/").content.decode()
    assert subscription.url not in html
    assert str(delivery.pk) not in html
    assert client.post(f"/webhooks/{subscription.pk}/deactivate/").status_code == 404
    subscription.refresh_from_db()
    assert subscription.is_active
    api = token_client(other_admin)
    assert api.get("/api/v1/webhooks/subscriptions/").json()["results"] == []
    assert api.get("/api/v1/webhooks/deliveries/").json()["results"] == []


def test_deactivate(admin_client, subscription, delivery):
    response = admin_client.post(f"/webhooks/{subscription.pk}/deactivate/")
    assert response.status_code == 302
    subscription.refresh_from_db()
    delivery.refresh_from_db()
    assert not subscription.is_active
    assert subscription.deactivated_at
    assert delivery.status == Delivery.Status.FAILED


def test_delivery_log_page(admin_client, delivery):
    row = delivery_row(admin_client.get("/webhooks/").content.decode(), delivery)
    assert cell(row, "status") == "Retrying"
    assert cell(row, "attempts") == "2"
    assert "HTTP 500" in row
    assert "report.signed report:7" in row


def test_api_lists_for_admins(department_admin, subscription, delivery):
    api = token_client(department_admin)
    response = api.get("/api/v1/webhooks/subscriptions/")
    assert response.status_code == 200, response.content
    [item] = response.json()["results"]
    assert (item["id"], item["url"], item["events"], item["is_active"]) == (
        subscription.pk,
        "http://127.0.0.1:9/ehr",
        ["report.signed"],
        True,
    )
    assert subscription.secret not in response.content.decode()
    [row] = api.get("/api/v1/webhooks/deliveries/").json()["results"]
    assert (row["id"], row["status"], row["attempts"], row["last_status_code"], row["last_error"]) == (
        str(delivery.pk),
        "retrying",
        2,
        500,
        "HTTP 500",
    )
    assert row["subscription"] == subscription.pk
    assert row["next_attempt_at"]


def test_api_refusals(radiologist, department_admin, subscription):
    response = token_client(radiologist).get("/api/v1/webhooks/deliveries/")
    assert response.status_code == 403
    assert response.json()["error"]["status"] == 403
    response = token_client(department_admin).get("/api/v1/webhooks/deliveries/", {"status": "failed"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_parameter"
    response = token_client(department_admin).post("/api/v1/webhooks/subscriptions/", {}, format="json")
    assert response.status_code == 405
    assert Client().get("/api/v1/webhooks/subscriptions/").status_code == 401
