"""In a real browser: the heatmap arrives with the polled result, lies exactly over the image in the
viewer's viewport, and its opacity slider and on/off toggle work (also on the block swapped in by
the polling)."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from diagnosis import services
from diagnosis.models import Modality
from tests.conftest import RESOURCES
from tests.factories import DEFAULT_PASSWORD, CaseFactory, PatientFactory
from tests.test_browser import browser, screenshot  # noqa: F401 - the shared Chromium fixture
from tests.test_gate import colour_photo, encode

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_heatmap_overlay_controls(browser, live_server, radiologist, installed_models):  # noqa: F811
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    case = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)
    data = (RESOURCES / "kermany_pneumonia_1.jpg").read_bytes()
    job = services.image_upload(case=case, file=SimpleUploadedFile("chest.jpg", data), uploaded_by=radiologist)
    wait = WebDriverWait(browser, 30)

    browser.get(f"{live_server.url}/cases/{case.pk}/")
    browser.find_element(By.NAME, "username").send_keys(radiologist.username)
    browser.find_element(By.NAME, "password").send_keys(DEFAULT_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(ec.url_to_be(f"{live_server.url}/cases/{case.pk}/"))

    services.job_run(job_id=job.pk)  # the worker's part; the page's polling brings the result in
    block = f"#image-{job.image_id}"
    # Drawn over the viewer's own viewport (static/js/viewer.js), not over a second copy.
    overlay = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f"{block} .viewer-heatmap")))
    base = browser.find_element(By.CSS_SELECTOR, f"{block} .viewer-canvas")
    loaded = "return arguments[0].complete && arguments[0].naturalWidth"
    wait.until(lambda driver: driver.execute_script(loaded, overlay))
    assert browser.execute_script("return arguments[0].naturalWidth", overlay) == 64  # the model input
    # Stretched exactly over the shown image, as preprocessing stretched the image to the input.
    assert overlay.rect == base.rect
    assert base.rect["width"] > 300  # the viewport shows the image large, not a thumbnail
    assert overlay.value_of_css_property("opacity") == "0.5"

    slider = browser.find_element(By.CSS_SELECTOR, f"{block} .heatmap-opacity")
    browser.execute_script(
        "arguments[0].value = 80; arguments[0].dispatchEvent(new Event('input', {bubbles: true}));", slider
    )
    wait.until(lambda driver: overlay.value_of_css_property("opacity") == "0.8")
    assert browser.find_element(By.CSS_SELECTOR, f"{block} .heatmap-opacity-value").text == "80 %"
    screenshot(browser, "case_heatmap")

    browser.find_element(By.CSS_SELECTOR, f"{block} .heatmap-toggle").click()
    assert not overlay.is_displayed()
    assert base.is_displayed()
    browser.find_element(By.CSS_SELECTOR, f"{block} .heatmap-toggle").click()
    assert overlay.is_displayed()

    # The image was downloaded once (files are sent no-store, so every <img> of it costs a download).
    downloads = "return performance.getEntriesByType('resource').filter(e => e.name.endsWith(arguments[0])).length"
    assert browser.execute_script(downloads, f"/images/{job.image_id}/file/") == 1


def test_rejected_image_shows_the_reason_without_probabilities(browser, live_server, radiologist, installed_models):  # noqa: F811
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    case = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)
    data = encode(colour_photo(), "JPEG")
    assert PILImage.open(io.BytesIO(data)).mode == "RGB"
    job = services.image_upload(case=case, file=SimpleUploadedFile("photo.jpg", data), uploaded_by=radiologist)
    wait = WebDriverWait(browser, 30)

    browser.get(f"{live_server.url}/cases/{case.pk}/")
    browser.find_element(By.NAME, "username").send_keys(radiologist.username)
    browser.find_element(By.NAME, "password").send_keys(DEFAULT_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(ec.url_to_be(f"{live_server.url}/cases/{case.pk}/"))

    services.job_run(job_id=job.pk)
    block = f"#image-{job.image_id}"
    reason = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, f"{block} .rejection-reason")))
    assert reason.text.startswith("This looks like a colour picture, not a radiograph")
    assert browser.find_element(By.CSS_SELECTOR, f"{block} .job-status").text == "rejected"
    assert not browser.find_elements(By.CSS_SELECTOR, f"{block} .probabilities")
    assert not browser.find_elements(By.CSS_SELECTOR, f"{block} .heatmap-overlay")
    screenshot(browser, "case_rejected")
