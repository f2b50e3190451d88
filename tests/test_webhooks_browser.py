"""The webhooks page in headless Chromium: a department admin registers a webhook (the secret shows
once), sees it in the list, and reads the delivery log. Screenshots go to tests/artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from webhooks.models import Delivery, Event, Subscription

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1366,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait(driver) -> WebDriverWait:
    # A form POST and its answer on the live server: measured at 0.25-0.27 s here (load average 9
    # on 2 cores); 15 s leaves room for a far slower machine.
    return WebDriverWait(driver, 15)


def sign_in(driver, live_server, user) -> None:
    client = Client()
    client.force_login(user)
    driver.get(f"{live_server.url}/accounts/login/")
    driver.delete_all_cookies()
    driver.add_cookie({"name": "sessionid", "value": client.cookies["sessionid"].value, "path": "/"})


def test_register_a_webhook_and_read_the_log(browser, live_server, settings, department_admin):
    settings.XNET_WEBHOOK_ALLOW_LOOPBACK = True
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
