"""In a real browser (headless Chromium): sign through the check page, read the model card and
the audit log with a case view's picture reads grouped (issue 13). Screenshots in
tests/artifacts/."""

from __future__ import annotations

import re

import pytest
from django.core.files.base import ContentFile
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from reviews.models import Report
from tests.factories import DEFAULT_PASSWORD, CaseFactory, PatientFactory, PredictionFactory, png_bytes, totp_code
from tests.test_browser import browser, screenshot  # noqa: F401 - the Chromium fixture and its screenshots

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(driver, live_server, user, *, second_factor: bool = False) -> None:
    driver.get(f"{live_server.url}/accounts/login/")
    driver.find_element(By.NAME, "username").send_keys(user.username)
    driver.find_element(By.NAME, "password").send_keys(DEFAULT_PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    if second_factor:
        WebDriverWait(driver, 30).until(ec.url_contains("/accounts/two-factor/verify/"))
        driver.find_element(By.NAME, "code").send_keys(totp_code(user.totpdevice_set.get()))
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit].primary").click()
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".topbar")))


def test_sign_through_the_check_page_then_read_the_audit_log(browser, live_server, radiologist, department_admin):  # noqa: F811
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, name="Ada Lovelace")
    case = CaseFactory(patient=patient, created_by=radiologist)
    for _ in range(2):
        PredictionFactory(job__image__case=case, heatmap=ContentFile(png_bytes(), name="heat.png"))
    wait = WebDriverWait(browser, 30)

    log_in(browser, live_server, radiologist)
    browser.get(f"{live_server.url}/cases/{case.pk}/")
    browser.find_element(By.CSS_SELECTOR, "input[name=decision][value=agree]").click()
    browser.find_element(By.NAME, "impression").send_keys("Right lower lobe consolidation.")
    browser.find_element(By.XPATH, "//button[contains(., 'Sign report')]").click()

    wait.until(ec.url_to_be(f"{live_server.url}/cases/{case.pk}/report/confirm/"))
    assert f"Sign the report of case {case.pk}?" in browser.find_element(By.TAG_NAME, "h1").text
    assert "Right lower lobe consolidation." in browser.find_element(By.CSS_SELECTOR, ".confirm-impression").text
    screenshot(browser, "sign_check_page")
    assert not Report.objects.filter(case=case).exists()
    browser.find_element(By.XPATH, "//button[contains(., 'Sign and lock the report')]").click()

    wait.until(ec.url_to_be(f"{live_server.url}/cases/{case.pk}/"))
    assert "Signed report" in browser.find_element(By.CSS_SELECTOR, "#report").text
    assert Report.objects.get(case=case).impression == "Right lower lobe consolidation."

    browser.delete_all_cookies()
    log_in(browser, live_server, department_admin, second_factor=True)
    browser.get(f"{live_server.url}/audit/?user={radiologist.username}")
    page = browser.find_element(By.CSS_SELECTOR, "table.audit").text
    assert f"case {case.pk} · Ada Lovelace" in page
    summary = browser.find_element(By.CSS_SELECTOR, ".audit-grouped summary")
    # The pictures the case page's viewer fetched, one event each, under the case view.
    assert re.fullmatch(r"with \d+ images?( and \d+ heatmaps?)?", summary.text), summary.text
    summary.click()
    screenshot(browser, "audit_log_grouped")


def test_model_card_page(browser, live_server, radiologist, settings):  # noqa: F811
    settings.XNET_MODEL_DIR = settings.BASE_DIR / "ml" / "models"
    log_in(browser, live_server, radiologist)
    browser.get(f"{live_server.url}/models/xray-mobilenetv2/2.0.0/")
    assert len(browser.find_elements(By.TAG_NAME, "h1")) == 1
    assert browser.find_element(By.CSS_SELECTOR, ".training-data table").is_displayed()
    screenshot(browser, "model_card")
