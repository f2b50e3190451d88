"""The webhooks page in headless Chromium: a department admin registers a webhook (the secret shows
once), sees it in the list, and reads the delivery log. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import pytest
from django.utils import timezone
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.test_browser import ARTIFACTS, browser, sign_in  # noqa: F401 - the shared Chromium fixture
from webhooks.models import Delivery, Event, Subscription

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def wait(driver) -> WebDriverWait:
    # A form POST and its answer on the live server: measured at 0.25-0.27 s here (load average 9
    # on 2 cores); 15 s leaves room for a far slower machine.
    return WebDriverWait(driver, 15)


def test_register_a_webhook_and_read_the_log(browser, live_server, settings, department_admin):  # noqa: F811
    settings.XNET_WEBHOOK_ALLOW_LOOPBACK = True
    browser.set_window_size(1366, 1000)
    sign_in(browser, live_server, department_admin)
    browser.get(f"{live_server.url}/webhooks/")
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Webhooks of {department_admin.department.name}"
    browser.find_element(By.NAME, "url").send_keys("http://127.0.0.1:9/ehr")
    boxes = browser.find_elements(By.CSS_SELECTOR, "input[name=events]")
    assert len(boxes) == 2
    assert all(box.is_selected() for box in boxes)  # both events, unless unticked
    boxes[0].click()  # job.finished off
    browser.find_element(By.NAME, "description").send_keys("EHR bridge")
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()

    secret = wait(browser).until(ec.presence_of_element_located((By.ID, "new-webhook-secret"))).text
    subscription = Subscription.objects.get()
    assert secret == subscription.secret
    assert subscription.events == ["report.signed"]
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "webhooks_registered.png"))

    Delivery.objects.create(
        subscription=subscription,
        event=Event.REPORT_SIGNED,
        object_key="report:1",
        payload={},
        status=Delivery.Status.RETRYING,
        attempts=1,
        last_status_code=503,
        last_error="HTTP 503",
        next_attempt_at=timezone.now(),
    )
    browser.get(f"{live_server.url}/webhooks/")
    assert not browser.find_elements(By.ID, "new-webhook-secret")
    assert secret not in browser.page_source
    row = browser.find_element(By.CSS_SELECTOR, "table.deliveries tbody tr")
    assert row.find_element(By.CSS_SELECTOR, "td.status").text == "Retrying"
    assert row.find_element(By.CSS_SELECTOR, "td.attempts").text == "1"
    browser.save_screenshot(str(ARTIFACTS / "webhooks_log.png"))

    browser.find_element(By.CSS_SELECTOR, "table.webhooks button.danger").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "table.webhooks"), "deactivated"))
    subscription.refresh_from_db()
    assert not subscription.is_active
