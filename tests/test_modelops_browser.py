"""A department admin, in headless Chromium: logs in with password and authenticator code, opens a
silent version's validation page from the dashboard, is refused a promotion below the signed-case
threshold, and promotes it once the threshold is met; the page then shows it assistive with the
change in its history. Screenshots go to tests/artifacts/."""

# ruff: noqa: F811 - the fixtures imported from the other test modules are requested by name
from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from diagnosis.models import ModelDeployment
from tests.factories import DEFAULT_PASSWORD, totp_code
from tests.test_browser import browser, screenshot  # noqa: F401 - fixture
from tests.test_modelops_validation import CLASSES, NEW, OLD, admin, dept, model_folders, signed_case  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_validation_page_and_promotion(browser, live_server, dept, admin, settings):
    settings.XNET_PROMOTION_MIN_SIGNED_PER_CLASS = 2
    for label in CLASSES:
        signed_case(dept, label, {NEW: (label, 0.85), OLD: ("normal", 0.7)})
    wait = WebDriverWait(browser, 30)

    browser.get(f"{live_server.url}/audit/dashboard/")
    browser.find_element(By.NAME, "username").send_keys(admin.username)
    browser.find_element(By.NAME, "password").send_keys(DEFAULT_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(ec.url_contains("/accounts/two-factor/verify/"))
    browser.find_element(By.NAME, "code").send_keys(totp_code(admin.totpdevice_set.get()))
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit].primary").click()
    wait.until(ec.url_contains("/audit/dashboard/"))

    # From the dashboard's version block to its validation page.
    section = browser.find_element(By.CSS_SELECTOR, f'section[data-model="{NEW[0]}"]')
    assert "silent" in section.find_element(By.CSS_SELECTOR, "h2").text
    section.find_element(By.LINK_TEXT, "Local validation and status").click()
    wait.until(ec.url_contains(f"/models/{NEW[0]}/{NEW[1]}/validation/"))
    assert browser.find_element(By.CSS_SELECTOR, ".stat-signed-cases").text == "4"
    assert browser.find_element(By.CSS_SELECTOR, ".stat-accuracy").text.startswith("100.0 % (4/4; 95 % CI")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.class-rates tbody tr")
    assert [row.get_attribute("data-label") for row in rows] == CLASSES
    assert browser.find_element(By.CSS_SELECTOR, 'svg[aria-label="Calibration of cxr-new 2.0.0 here"]')
    assert "Beside the assistive version cxr-old" in browser.find_element(By.ID, "comparison").text
    screenshot(browser, "model_validation")

    # Below the threshold (1 signed case per class, 2 needed): refused, with the counts.
    form = browser.find_element(By.CSS_SELECTOR, "form.promote-form")
    form.find_element(By.NAME, "reason").send_keys("Agrees with our radiologists on every class.")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    message = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".message-error")))
    assert "Promotion needs at least 2 signed cases per class" in message.text
    assert "normal 1, pneumonia 1, covid 1, tuberculosis 1" in message.text
    assert ModelDeployment.objects.get(department=dept, model_name=NEW[0]).status == "silent"
    screenshot(browser, "model_promotion_refused")

    # Threshold met: promoted; the old version steps down to silent.
    settings.XNET_PROMOTION_MIN_SIGNED_PER_CLASS = 1
    form = browser.find_element(By.CSS_SELECTOR, "form.promote-form")
    reason = form.find_element(By.NAME, "reason")
    reason.clear()
    reason.send_keys("Agrees with our radiologists on every class.")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    success = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".message-success")))
    assert success.text == "cxr-new 2.0.0 is assistive now."
    assert browser.find_element(By.CSS_SELECTOR, ".page-head .model-status").text == "assistive"
    latest = browser.find_element(By.CSS_SELECTOR, "table.status-history tbody tr.status-change")
    assert "silent → assistive" in latest.text
    assert "Agrees with our radiologists on every class." in latest.text
    assert admin.username in latest.text
    assert not browser.find_elements(By.CSS_SELECTOR, "form.promote-form")
    assert ModelDeployment.objects.get(department=dept, model_name=OLD[0]).status == "silent"
    screenshot(browser, "model_promoted")
