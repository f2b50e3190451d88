"""In a real browser at 1400 px: the worklist's rows stay one line (record numbers never wrap),
the whole row opens its case with the worklist's filters, and so does the keyboard."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from reviews.models import Report
from tests.factories import DEFAULT_PASSWORD, CaseFactory, ImageFactory, PatientFactory, PredictionFactory
from tests.test_browser import ARTIFACTS, browser  # noqa: F401 - the shared Chromium fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTH = 1400

# Lines a text occupies: its line boxes, counted by the browser's own layout.
LINES = """
const range = document.createRange();
range.selectNodeContents(arguments[0]);
const tops = new Set();
for (const rect of range.getClientRects()) { if (rect.width > 0) tops.add(Math.round(rect.top)); }
return tops.size;
"""


def department_worklist(radiologist) -> list:
    """A realistic page: long record numbers and names, long indications, every reading state."""
    now = timezone.now()
    cases = []
    findings = [("pneumonia", 0.93), ("covid", 0.71), ("normal", 0.88), ("tuberculosis", 0.64), None]
    for n in range(12):
        patient = PatientFactory(
            department=radiologist.department,
            created_by=radiologist,
            mrn=f"REC-2026-{n:03d}-0004711-B",
            name=f"Maximiliane Alexandrina Oberhausen-Wittgenstein {n}",
            birth_date=(now - timedelta(days=365 * (20 + 5 * n))).date(),
            sex="FM"[n % 2],
        )
        case = CaseFactory(
            patient=patient,
            created_by=radiologist,
            indication="Persistent productive cough for three weeks, fever, night sweats, weight loss; rule out TB.",
        )
        image = ImageFactory(case=case, uploaded_at=now - timedelta(minutes=7 * n + 3, hours=n % 3 * 2))
        finding = findings[n % len(findings)]
        if finding:
            PredictionFactory(job__image=image, top_label=finding[0], top_probability=finding[1])
        if n % 4 == 3:
            Report.objects.create(
                case=case,
                ai_label=finding[0] if finding else "",
                ai_probability=finding[1] if finding else None,
                agrees_with_ai=False,
                final_label="pneumonia",
                impression="Right lower lobe consolidation.",
                signed_by=radiologist,
            )
        cases.append(case)
    return cases


def log_in(browser, live_server, radiologist, path: str) -> None:  # noqa: F811
    browser.get(f"{live_server.url}{path}")
    browser.find_element(By.NAME, "username").send_keys(radiologist.username)
    browser.find_element(By.NAME, "password").send_keys(DEFAULT_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 30).until(ec.url_to_be(f"{live_server.url}{path}"))


def test_worklist_at_1400_px_keeps_each_row_on_one_line(browser, live_server, radiologist):  # noqa: F811
    department_worklist(radiologist)
    browser.set_window_size(WIDTH, 1000)
    log_in(browser, live_server, radiologist, "/")
    assert browser.execute_script("return window.innerWidth") <= WIDTH
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "worklist-1400.png"))  # for a human look
    record_numbers = browser.find_elements(By.CSS_SELECTOR, "td.mrn")
    assert len(record_numbers) == 12
    for cell in record_numbers:
        assert cell.text.startswith("REC-2026-")
        assert browser.execute_script(LINES, cell) == 1, f"{cell.text} wraps"
    # Every row is one line high (the tallest cell sets a row's height): nothing wraps anywhere.
    heights = {round(row.rect["height"]) for row in browser.find_elements(By.CSS_SELECTOR, "tr.case-row")}
    line = browser.execute_script(
        "return parseFloat(getComputedStyle(document.querySelector('td.mrn')).lineHeight)"
        " || 1.2 * parseFloat(getComputedStyle(document.querySelector('td.mrn')).fontSize)"
    )
    assert len(heights) == 1, heights
    assert heights.pop() < 2 * line + 24  # one line plus the cell padding, not two lines
    # No sideways scrolling at this width.
    assert browser.execute_script("return document.documentElement.scrollWidth") <= WIDTH


def test_row_click_and_keyboard_open_the_case_with_the_filters(browser, live_server, radiologist):  # noqa: F811
    cases = department_worklist(radiologist)
    browser.set_window_size(WIDTH, 1000)
    log_in(browser, live_server, radiologist, "/?reading=unsigned")
    wait = WebDriverWait(browser, 30)
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.case-row")
    assert len(rows) == 9  # the three signed cases are filtered out
    first_id = int(rows[0].get_attribute("data-case-id"))
    assert first_id in {case.pk for case in cases}
    # A click on a plain cell (the indication) opens the row's case, filters kept.
    # (at the cell's point, as a mouse does: the stretched case link lies over the cell)
    ActionChains(browser).move_to_element(rows[0].find_element(By.CSS_SELECTOR, "td.reason")).click().perform()
    wait.until(ec.url_to_be(f"{live_server.url}/cases/{first_id}/?reading=unsigned"))
    # The patient link in the row still goes to the patient.
    browser.back()
    wait.until(ec.url_to_be(f"{live_server.url}/?reading=unsigned"))
    patient_link = browser.find_elements(By.CSS_SELECTOR, "tr.case-row")[1].find_element(By.CSS_SELECTOR, "a.above-row")
    patient_href = patient_link.get_attribute("href")
    patient_link.click()
    wait.until(ec.url_to_be(patient_href))
    # Keyboard: Tab reaches the row's link (after the filters and the links above the table), Enter opens it.
    browser.back()
    wait.until(ec.url_to_be(f"{live_server.url}/?reading=unsigned"))
    second_id = int(browser.find_elements(By.CSS_SELECTOR, "tr.case-row")[1].get_attribute("data-case-id"))
    browser.execute_script("document.getElementById('id_q').focus()")  # start from the search field
    for _ in range(60):
        active = browser.switch_to.active_element
        if "row-link" in (active.get_attribute("class") or "") and active.get_attribute("href").startswith(
            f"{live_server.url}/cases/{second_id}/"
        ):
            break
        ActionChains(browser).send_keys(Keys.TAB).perform()
    else:
        pytest.fail("Tab never reached the second row's link")
    # The focused row is outlined, so a keyboard user sees where they are.
    row = browser.find_elements(By.CSS_SELECTOR, "tr.case-row")[1]
    assert row.value_of_css_property("outline-style") == "solid"
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait.until(ec.url_to_be(f"{live_server.url}/cases/{second_id}/?reading=unsigned"))
