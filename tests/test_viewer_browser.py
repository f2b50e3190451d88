"""The case page's reading room in a real browser (headless Chromium): zoom, pan and window a
DICOM and see the pixels under a point change; the heatmap over the same viewport; two cases
walked with the keyboard keeping the worklist's filters; a prior opened beside the current image.

Pixels are read from screenshots of the viewport, so what is checked is what a radiologist sees.
Screenshots go to tests/artifacts/ (viewer_*.png) for a human look.
"""

from __future__ import annotations

import io
import math
import time
from datetime import timedelta

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from PIL import Image as PILImage
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from diagnosis import services
from diagnosis.models import Case, Modality
from reviews import services as review_services
from tests.conftest import RESOURCES
from tests.dicom_files import make_dicom, upload
from tests.factories import CaseFactory, PatientFactory
from tests.test_browser import ARTIFACTS, browser  # noqa: F401 - the shared Chromium fixture
from tests.test_browser import sign_in as browser_sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Rows 0..255 hold values 0..4080 in steps of 16 (one value per row): the file's window
# (centre 1000, width 500) shows rows 47-78 as greys; the 8-bit copy clips everything below black
# and everything above white, which the full range shows again.
ROWS, COLS = 256, 192
WINDOW = (1000.0, 500.0)
DICOM_PATIENT = {"mrn": "MRN-1001", "name": "Jane Doe"}  # whom make_dicom's objects name


def ramp() -> np.ndarray:
    return np.repeat((np.arange(ROWS, dtype=np.uint16) * 16)[:, None], COLS, axis=1)


def screenshot(driver, name: str) -> None:
    """The window as the radiologist sees it (a reading-room screen, see sign_in)."""
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def sign_in(driver, live_server, user) -> None:
    driver.set_window_size(1600, 1200)
    browser_sign_in(driver, live_server, user)


def viewport_pixels(driver, selector: str = ".image-card:not([hidden]) .viewer-area") -> np.ndarray:
    """The viewport as shown, in CSS pixels (grey levels)."""
    area = driver.find_element(By.CSS_SELECTOR, selector)
    shot = PILImage.open(io.BytesIO(area.screenshot_as_png)).convert("L")
    width = driver.execute_script("return arguments[0].clientWidth", area)
    if shot.width != width:
        shot = shot.resize((width, round(shot.height * width / shot.width)))
    return np.asarray(shot, dtype=np.int16)


def image_point(driver, fx: float, fy: float) -> tuple[int, int]:
    """Where the image's point (fx, fy) (fractions of its width and height) is in the viewport."""
    return tuple(
        driver.execute_script(
            """
            const v = window.xnetReader.viewport(), p = v.item.imageToViewerElementCoordinates(
                new OpenSeadragon.Point(arguments[0] * v.width, arguments[1] * v.height));
            return [Math.round(p.x), Math.round(p.y)];
            """,
            fx,
            fy,
        )
    )


def ready(driver, selector: str = ".image-card:not([hidden]) .viewer") -> None:
    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.CSS_SELECTOR, selector).get_attribute("data-ready") == "true"
    )
    settle(driver)


def settle(driver) -> None:
    """Wait for OpenSeadragon's animation to end (no zoom or pan in flight), then two frames."""
    WebDriverWait(driver, 10).until(
        lambda d: d.execute_script(
            """
            const v = window.xnetReader.viewport();
            if (!v || !v.opened) return false;
            const vp = v.osd.viewport;
            return Math.abs(vp.getZoom(true) - vp.getZoom(false)) < 1e-9
                && vp.getCenter(true).distanceTo(vp.getCenter(false)) < 1e-9;
            """
        )
    )
    driver.execute_async_script(
        "const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(() => done()));"
    )


def press(driver, key: str) -> None:
    ActionChains(driver).send_keys(key).perform()


def test_zoom_pan_and_window_a_dicom(browser, live_server, radiologist):  # noqa: F811
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, **DICOM_PATIENT)
    case = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)
    job = services.image_upload(case=case, file=upload(make_dicom(ramp(), window=WINDOW)), uploaded_by=radiologist)
    image = job.image
    sign_in(browser, live_server, radiologist)
    browser.get(f"{live_server.url}/cases/{case.pk}/")
    ready(browser)

    # The page numbers the image and shows the header's essentials beside the viewport.
    card = browser.find_element(By.ID, f"image-{image.pk}")
    assert card.find_element(By.CSS_SELECTOR, "h2").text.startswith("Image 1 (1 of 1)")
    assert card.find_element(By.CSS_SELECTOR, ".fact-study-date").text == "2026-03-12"
    assert card.find_element(By.CSS_SELECTOR, ".fact-view-position").text == "PA"
    assert card.find_element(By.CSS_SELECTOR, ".fact-body-part").text == "CHEST"
    assert card.find_element(By.CSS_SELECTOR, ".fact-window").text.startswith("centre 1000, width 500")

    # At the file's window, row 200 (value 3200) is clipped white, row 20 (value 320) black.
    bright, dark = image_point(browser, 0.5, 200 / ROWS), image_point(browser, 0.5, 20 / ROWS)
    shown = viewport_pixels(browser)
    assert shown[bright[1], bright[0]] >= 250
    assert shown[dark[1], dark[0]] <= 5
    screenshot(browser, "viewer_dicom_file_window")

    # "Full range" (key 2): the values the 8-bit copy clipped come back as greys.
    press(browser, "2")
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.CSS_SELECTOR, ".viewer").get_attribute("data-shown-width") == "4080"
    )
    shown = viewport_pixels(browser)
    assert 180 <= shown[bright[1], bright[0]] <= 220  # 3200 / 4080 of white
    assert 10 <= shown[dark[1], dark[0]] <= 30  # 320 / 4080
    screenshot(browser, "viewer_dicom_full_range")

    # Window by drag (key W, then a left drag): to the left narrows the window, down lowers
    # the level. The pixel under the same point changes.
    press(browser, "w")
    area = browser.find_element(By.CSS_SELECTOR, ".viewer-area")
    before = viewport_pixels(browser)[bright[1], bright[0]]
    ActionChains(browser).move_to_element(area).click_and_hold().move_by_offset(-150, 0).move_by_offset(
        -150, 60
    ).release().perform()
    width = float(browser.find_element(By.CSS_SELECTOR, ".viewer").get_attribute("data-shown-width"))
    assert width < 4080 * 0.5
    after = viewport_pixels(browser)[bright[1], bright[0]]
    assert after != before
    press(browser, "w")  # back to panning

    # Zoom with the wheel around a point below the centre: the image grows under it, so the
    # pixel at a fixed place of the viewport shows another row of the ramp.
    press(browser, "2")
    zoom_before = browser.execute_script("return window.xnetReader.viewport().osd.viewport.getZoom()")
    probe = image_point(browser, 0.5, 0.9)
    value_before = viewport_pixels(browser)[probe[1], probe[0]]
    ActionChains(browser).scroll_to_element(area).perform()
    for _ in range(3):
        ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(area, 0, 0), 0, -200).perform()
        time.sleep(0.1)  # OpenSeadragon drops wheel events less than minScrollDeltaTime (50 ms) apart
    settle(browser)
    zoom_after = browser.execute_script("return window.xnetReader.viewport().osd.viewport.getZoom()")
    # zoomPerScroll is 1.2: whole wheel steps (a busy machine may merge two events into one).
    steps = round(math.log(zoom_after / zoom_before, 1.2))
    assert 1 <= steps <= 3
    assert zoom_after == pytest.approx(zoom_before * 1.2**steps, rel=1e-3)
    value_zoomed = viewport_pixels(browser)[probe[1], probe[0]]
    assert abs(int(value_zoomed) - int(value_before)) >= 15
    screenshot(browser, "viewer_dicom_zoomed")

    # Pan: drag the image up by 120 px; the same viewport point now shows a lower (brighter) row.
    ActionChains(browser).move_to_element(area).click_and_hold().move_by_offset(0, -60).move_by_offset(
        0, -60
    ).release().perform()
    settle(browser)
    value_panned = viewport_pixels(browser)[probe[1], probe[0]]
    assert int(value_panned) - int(value_zoomed) >= 15

    # Reset (key R): the file's window and the whole image again.
    press(browser, "r")
    settle(browser)
    assert browser.find_element(By.CSS_SELECTOR, ".viewer").get_attribute("data-shown-width") == "500"
    zoom_reset = browser.execute_script("return window.xnetReader.viewport().osd.viewport.getZoom()")
    assert zoom_reset == pytest.approx(zoom_before, rel=1e-3)


def test_the_heatmap_lies_over_the_same_viewport(browser, live_server, radiologist, installed_models):  # noqa: F811
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    case = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)
    data = (RESOURCES / "kermany_pneumonia_1.jpg").read_bytes()
    job = services.image_upload(case=case, file=SimpleUploadedFile("chest.jpg", data), uploaded_by=radiologist)
    sign_in(browser, live_server, radiologist)
    browser.get(f"{live_server.url}/cases/{case.pk}/")
    ready(browser)
    without = viewport_pixels(browser)

    services.job_run(job_id=job.pk)  # the worker's part; the page's polling brings the heatmap in
    heatmap = WebDriverWait(browser, 30).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, f"#image-{job.image_id} .viewer-heatmap"))
    )
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return arguments[0].complete", heatmap))
    canvas = browser.find_element(By.CSS_SELECTOR, f"#image-{job.image_id} .viewer-canvas")
    # Registered: the heatmap covers exactly the windowed image, in the one viewport.
    assert heatmap.rect == canvas.rect
    assert heatmap.value_of_css_property("opacity") == "0.5"
    settle(browser)
    shown = viewport_pixels(browser)
    assert np.abs(shown - without).mean() > 3  # the colours are over the image
    screenshot(browser, "viewer_heatmap_on")

    # It follows a zoom.
    browser.execute_script("window.xnetReader.viewport().osd.viewport.zoomBy(2)")
    settle(browser)
    assert heatmap.rect == canvas.rect

    # Off with the key H (the result block's checkbox follows), on again.
    press(browser, "h")
    assert not heatmap.is_displayed()
    assert not browser.find_element(By.CSS_SELECTOR, f"#image-{job.image_id} .heatmap-toggle").is_selected()
    press(browser, "0")
    settle(browser)
    assert np.abs(viewport_pixels(browser) - without).mean() < 1
    press(browser, "h")
    assert heatmap.is_displayed()

    # The opacity slider steers the overlay.
    slider = browser.find_element(By.CSS_SELECTOR, f"#image-{job.image_id} .heatmap-opacity")
    browser.execute_script(
        "arguments[0].value = 80; arguments[0].dispatchEvent(new Event('input', {bubbles: true}));", slider
    )
    assert heatmap.value_of_css_property("opacity") == "0.8"


def test_keyboard_walks_cases_and_images_with_the_worklist_filters(browser, live_server, radiologist):  # noqa: F811
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    first = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)
    second = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)
    other = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.CT)  # filtered out
    for case in (first, second, other):
        for name in ("kermany_normal_1.jpg", "kermany_normal_2.jpg"):
            data = (RESOURCES / name).read_bytes()
            services.image_upload(case=case, file=SimpleUploadedFile(name, data), uploaded_by=radiologist)
    sign_in(browser, live_server, radiologist)

    browser.get(f"{live_server.url}/cases/{first.pk}/?modality=xray")
    ready(browser)
    # Two images: the second through the arrow key, numbered by position.
    assert browser.find_element(By.CSS_SELECTOR, ".image-card:not([hidden]) .image-count").text == "(1 of 2)"
    press(browser, "\ue014")  # ArrowRight
    assert browser.find_element(By.CSS_SELECTOR, ".image-card:not([hidden]) .image-count").text == "(2 of 2)"
    ready(browser)
    screenshot(browser, "viewer_second_image")

    # The other x-ray case is the only neighbour under the filter; N or P goes there, keeping it.
    forward = "n" if browser.find_elements(By.CSS_SELECTOR, "a.next-case") else "p"
    back = "p" if forward == "n" else "n"
    press(browser, forward)
    WebDriverWait(browser, 10).until(ec.url_to_be(f"{live_server.url}/cases/{second.pk}/?modality=xray"))
    ready(browser)
    assert not browser.find_elements(By.CSS_SELECTOR, f"a.{'next' if forward == 'n' else 'previous'}-case")
    press(browser, back)
    WebDriverWait(browser, 10).until(ec.url_to_be(f"{live_server.url}/cases/{first.pk}/?modality=xray"))
    ready(browser)

    # The help overlay on "?", closed by Escape; S goes to the sign-off form.
    press(browser, "?")
    assert browser.find_element(By.ID, "keyboard-help").is_displayed()
    screenshot(browser, "viewer_keyboard_help")
    press(browser, "\ue00c")  # Escape
    assert not browser.find_element(By.ID, "keyboard-help").is_displayed()
    press(browser, "s")
    focused = browser.switch_to.active_element
    assert focused.get_attribute("name") == "decision"
    # Keys typed into the form stay in the form.
    browser.find_element(By.NAME, "impression").send_keys("n")
    assert browser.current_url == f"{live_server.url}/cases/{first.pk}/?modality=xray"


def test_a_prior_opens_beside_the_current_image(browser, live_server, radiologist, installed_models):  # noqa: F811
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, **DICOM_PATIENT)
    earlier = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)
    Case.objects.filter(pk=earlier.pk).update(created_at=timezone.now() - timedelta(days=40))
    old = services.image_upload(case=earlier, file=upload(make_dicom(ramp(), window=WINDOW)), uploaded_by=radiologist)
    services.job_run(job_id=old.pk)
    review_services.report_sign(
        case=earlier,
        signed_by=radiologist,
        agrees_with_ai=False,
        final_label="pneumonia",
        impression="Right lower lobe consolidation.",
    )
    current = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)
    data = (RESOURCES / "kermany_pneumonia_2.jpg").read_bytes()
    services.image_upload(case=current, file=SimpleUploadedFile("chest.jpg", data), uploaded_by=radiologist)
    sign_in(browser, live_server, radiologist)

    browser.get(f"{live_server.url}/cases/{current.pk}/")
    ready(browser)
    prior = browser.find_element(By.CSS_SELECTOR, f'.prior[data-case-id="{earlier.pk}"]')
    assert "Pneumonia" in prior.find_element(By.CSS_SELECTOR, ".prior-finding").text
    assert (timezone.now() - timedelta(days=40)).strftime("%Y-%m-%d") in prior.text
    prior.find_element(By.CSS_SELECTOR, ".open-prior").click()
    pane = browser.find_element(By.CSS_SELECTOR, ".compare-pane")
    WebDriverWait(browser, 30).until(
        lambda d: pane.find_element(By.CSS_SELECTOR, ".viewer").get_attribute("data-ready") == "true"
    )
    assert "Pneumonia" in pane.find_element(By.CSS_SELECTOR, ".compare-finding").text
    current_view = browser.find_element(By.CSS_SELECTOR, ".image-card:not([hidden]) .viewer-area")
    prior_view = pane.find_element(By.CSS_SELECTOR, ".viewer-area")
    # Side by side: the prior to the right of the current image, at the same height.
    assert prior_view.rect["x"] >= current_view.rect["x"] + current_view.rect["width"]
    assert abs(prior_view.rect["y"] - current_view.rect["y"]) < 80
    # The prior windows its own real values: its viewer is the DICOM's.
    assert pane.find_element(By.CSS_SELECTOR, ".viewer").get_attribute("data-shown-width") == "500"
    browser.execute_script("arguments[0].scrollIntoView()", current_view)
    screenshot(browser, "viewer_prior_beside")
    pane.find_element(By.CSS_SELECTOR, "[data-action=close-compare]").click()
    assert not pane.is_displayed()


def test_ct_windows_in_hounsfield_units_with_presets(browser, live_server, radiologist):  # noqa: F811
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, **DICOM_PATIENT)
    case = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.CT)
    # Rows from -1024 HU (air) to 1016 HU in steps of 8; chest named in the header.
    values = np.repeat((np.arange(ROWS, dtype=np.int16) * 8)[:, None], COLS, axis=1)
    data = make_dicom(values, modality="CT", rescale=(1, -1024), signed=True, bits_stored=16)
    services.image_upload(case=case, file=upload(data), uploaded_by=radiologist)
    sign_in(browser, live_server, radiologist)
    browser.get(f"{live_server.url}/cases/{case.pk}/")
    ready(browser)

    labels = [button.text for button in browser.find_elements(By.CSS_SELECTOR, ".viewer-presets button")]
    assert labels == ["Default", "Lung", "Mediastinum", "Bone"]
    viewer = browser.find_element(By.CSS_SELECTOR, ".viewer")
    # The intake's lung window is the default.
    assert (viewer.get_attribute("data-shown-center"), viewer.get_attribute("data-shown-width")) == ("-600", "1500")
    soft = image_point(browser, 0.5, (40 + 1024) / 8 / ROWS)  # the row at 40 HU
    lung_grey = viewport_pixels(browser)[soft[1], soft[0]]
    press(browser, "3")  # mediastinum: 40 HU sits mid-grey
    WebDriverWait(browser, 10).until(lambda d: viewer.get_attribute("data-shown-width") == "400")
    assert viewer.get_attribute("data-shown-center") == "40"
    grey = viewport_pixels(browser)[soft[1], soft[0]]
    # DICOM's linear window (PS3.3 C.11.2.1.2): 40 HU is 236 in the lung window, 128 in this one.
    assert abs(int(lung_grey) - round(((40 + 600.5) / 1499 + 0.5) * 255)) <= 3
    assert abs(int(grey) - round(((40 - 39.5) / 399 + 0.5) * 255)) <= 3
    assert "HU" in browser.find_element(By.CSS_SELECTOR, ".viewer-readout").text
    screenshot(browser, "viewer_ct_mediastinum")
    press(browser, "i")  # invert
    assert abs(int(viewport_pixels(browser)[soft[1], soft[0]]) - (255 - int(grey))) <= 3
