"""One real-browser flow: log in, create a case with a chest X-ray, watch the result arrive.

Headless Chromium (Debian packages chromium + chromium-driver) driven by Selenium against
pytest-django's live server. No broker: after the upload the test runs the job itself, as the
worker would (the real-worker path is covered by the integration tests), and the page's
polling script must pick the result up. Screenshots go to tests/artifacts/ for a human look.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client
from PIL import Image as PILImage
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from diagnosis import services
from diagnosis.models import Case, InferenceJob
from tests.conftest import RESOURCES
from tests.factories import (
    DEFAULT_PASSWORD,
    CaseFactory,
    InferenceJobFactory,
    PatientFactory,
    PredictionFactory,
    totp_code,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).parent / "artifacts"
WIDTH = 1366


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
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        f"--window-size={WIDTH},900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def sign_in(driver, live_server, user) -> None:
    """Enter the browser signed in as `user` without the login form (a force_login session's
    cookie): for tests of other pages; the form itself has its own tests."""
    client = Client()
    client.force_login(user)
    driver.get(f"{live_server.url}/accounts/login/")
    driver.delete_all_cookies()
    driver.add_cookie({"name": "sessionid", "value": client.cookies["sessionid"].value, "path": "/"})


def screenshot(driver, name: str) -> None:
    """The whole page, at laptop width."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, max(900, min(height + 150, 4000)))
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    driver.set_window_size(WIDTH, 900)


def test_login_upload_and_see_the_result(
    browser, live_server, tmp_path, department_admin, radiologist, installed_models
):
    # Some history, so the worklist and users pages look like a working department.
    cases = {}
    for mrn, status in (("MRN-1001", "failed"), ("MRN-1002", "running"), ("MRN-1003", "succeeded")):
        modality = "ct" if status == "failed" else "xray"
        patient = PatientFactory(department=radiologist.department, created_by=radiologist, mrn=mrn)
        case = cases[status] = CaseFactory(patient=patient, modality=modality)
        if status == "succeeded":
            PredictionFactory(job__image__case=case)
        else:
            InferenceJobFactory(image__case=case, status=status, error_message="no model installed for CT")
    wait = WebDriverWait(browser, 30)

    # Log in.
    browser.get(f"{live_server.url}/cases/new/")
    assert "/accounts/login/" in browser.current_url
    browser.find_element(By.NAME, "username").send_keys(department_admin.username)
    browser.find_element(By.NAME, "password").send_keys(DEFAULT_PASSWORD)
    screenshot(browser, "login")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # Department admins use a second factor: the code their authenticator app shows now.
    wait.until(ec.url_contains("/accounts/two-factor/verify/"))
    browser.find_element(By.NAME, "code").send_keys(totp_code(department_admin.totpdevice_set.get()))
    screenshot(browser, "two_factor")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit].primary").click()
    wait.until(ec.url_to_be(f"{live_server.url}/cases/new/"))

    # The stylesheet is served and applied (no CDN, nothing external).
    topbar = browser.find_element(By.CSS_SELECTOR, ".topbar")
    assert topbar.value_of_css_property("background-color") == "rgba(23, 32, 46, 1)"
    assert "Radiology A" in topbar.text

    # New case: register a new patient, upload a chest X-ray.
    browser.find_element(By.CSS_SELECTOR, "input[name=patient_mode][value=new]").click()
    browser.find_element(By.NAME, "mrn").send_keys("MRN-2001")
    browser.find_element(By.NAME, "name").send_keys("Jane Example")
    Select(browser.find_element(By.NAME, "sex")).select_by_value("F")
    Select(browser.find_element(By.NAME, "modality")).select_by_value("xray")
    browser.find_element(By.NAME, "indication").send_keys("Productive cough, fever 39 °C for four days.")
    browser.find_element(By.NAME, "images").send_keys(str(RESOURCES / "kermany_normal_1.jpg"))
    screenshot(browser, "case_create")
    browser.find_element(By.CSS_SELECTOR, "form.case-form button[type=submit]").click()

    # Landed on the case page, job pending.
    wait.until(ec.url_matches(r"/cases/\d+/$"))
    case = Case.objects.get(patient__mrn="MRN-2001")
    assert browser.current_url == f"{live_server.url}/cases/{case.pk}/"
    job = InferenceJob.objects.get(image__case=case)
    block = browser.find_element(By.ID, f"image-{job.image_id}")
    assert block.find_element(By.CSS_SELECTOR, ".job-status").text in {"pending", "running"}
    # The image streams from an authenticated view into the viewer (static/js/viewer.js): wait
    # until its pixels are in, then check the viewport holds the whole upload.
    wait.until(lambda driver: block.find_element(By.CSS_SELECTOR, ".viewer").get_attribute("data-ready") == "true")
    canvas = block.find_element(By.CSS_SELECTOR, ".viewer-canvas")
    assert browser.execute_script("return [arguments[0].width, arguments[0].height]", canvas) == [224, 224]

    # The worker's part, in this process; the page's polling must show the outcome.
    services.job_run(job_id=job.pk)
    wait.until(
        lambda driver: driver.find_element(By.CSS_SELECTOR, f"#image-{job.image_id} .job-status").text == "succeeded"
    )
    job.refresh_from_db()
    top_label = block.find_element(By.CSS_SELECTOR, ".top-label").text
    assert top_label in {"Normal", "Pneumonia", "COVID-19", "Tuberculosis"}
    assert block.find_element(By.CSS_SELECTOR, ".model-version").text == "1.0.0"
    assert block.find_element(By.CSS_SELECTOR, ".model-name").text == "xray-tiny"
    bars = block.find_elements(By.CSS_SELECTOR, ".probabilities tr")
    assert len(bars) == 4
    assert re.fullmatch(r"\d+\.\d %", bars[0].find_element(By.CSS_SELECTOR, "td.num").text)
    wait.until(
        lambda driver: driver.find_element(By.CSS_SELECTOR, ".live-note").text == "All classifications finished."
    )
    # The sign-off block, rendered before the result, now offers the finding to agree with.
    wait.until(lambda driver: top_label in driver.find_element(By.CSS_SELECTOR, "#report .ai-finding").text)
    assert "No AI result" not in browser.find_element(By.ID, "report").text
    screenshot(browser, "case_detail")

    # A bad upload on the case page: a 400 page with the reason, and the result still shown.
    gif = tmp_path / "scan.gif"
    PILImage.linear_gradient("L").resize((128, 128)).save(gif, format="GIF")
    browser.find_element(By.CSS_SELECTOR, "section.upload input[name=images]").send_keys(str(gif))
    browser.find_element(By.CSS_SELECTOR, "section.upload button[type=submit]").click()
    error = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "section.upload .errorlist")))
    assert error.text == "scan.gif: Unsupported image format GIF. Upload a PNG, JPEG or DICOM chest image."
    assert browser.find_element(By.CSS_SELECTOR, f"#image-{job.image_id} .top-label").text == top_label
    screenshot(browser, "case_upload_error")

    # A failed job shows its reason.
    browser.get(f"{live_server.url}/cases/{cases['failed'].pk}/")
    message = browser.find_element(By.CSS_SELECTOR, ".error-message").text
    assert message == "no model installed for CT"
    screenshot(browser, "case_failed")

    # The worklist shows the new case with its finding; the row order is triage order, which
    # depends on the random model's finding (tests/test_reviews_triage.py checks the order).
    browser.find_element(By.LINK_TEXT, "Worklist").click()
    row = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f'tr.case-row[data-case-id="{case.pk}"]')))
    assert "succeeded" in row.text
    assert top_label in row.text
    # The wait shows as elapsed time ("just now", "42 min"), the timestamp in its title.
    wait_cell = row.find_element(By.CSS_SELECTOR, ".wait")
    assert wait_cell.get_attribute("title").startswith("Waiting since ")
    assert re.fullmatch(r"just now|\d+ min", wait_cell.text)  # uploaded during this test
    screenshot(browser, "worklist")

    # The patient's page and the department's users.
    row.find_element(By.LINK_TEXT, "Jane Example").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".history-case")))
    screenshot(browser, "patient_detail")
    browser.find_element(By.LINK_TEXT, "Users").click()
    table = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.users")))
    assert radiologist.username in table.text
    screenshot(browser, "users")

    # Log out through the top bar's POST form.
    browser.find_element(By.CSS_SELECTOR, ".topbar button.link-button").click()
    wait.until(ec.url_contains("/accounts/login/"))
