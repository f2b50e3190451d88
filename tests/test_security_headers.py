"""Every page and API answer carries Cache-Control: no-store (they carry names and record
numbers), a Content-Security-Policy that allows scripts from this server only, and a
Permissions-Policy; and no page has an inline script or event handler that the policy would block.
"""

from __future__ import annotations

import re

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import reverse

from tests.factories import CaseFactory, InferenceJobFactory, PatientFactory, PredictionFactory, png_bytes
from tests.test_browser import browser, sign_in  # noqa: F401 - the shared Chromium fixture

pytestmark = pytest.mark.django_db

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
EVENT_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)
JAVASCRIPT_URL = re.compile(r"""(href|src|action)\s*=\s*["']\s*javascript:""", re.IGNORECASE)


@pytest.fixture
def prediction(radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, mrn="A-1001")
    case = CaseFactory(patient=patient, created_by=radiologist)
    return PredictionFactory(job__image__case=case, heatmap=ContentFile(png_bytes(), name="heatmap.png"))


def directives(response) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    parsed = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def assert_protected(response, *, html: bool) -> None:
    assert "no-store" in response["Cache-Control"], response.request["PATH_INFO"]
    policy = directives(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval', no CDN
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "camera=()" in response["Permissions-Policy"]
    assert "microphone=()" in response["Permissions-Policy"]
    if html:
        body = response.content.decode()
        path = response.request["PATH_INFO"]
        assert not INLINE_SCRIPT.findall(body), f"inline <script> on {path}"
        assert not EVENT_HANDLER.findall(body), f"inline event handler on {path}"
        assert not JAVASCRIPT_URL.findall(body), f"javascript: URL on {path}"


def test_radiologist_pages(rad_client, prediction):
    case = prediction.job.image.case
    for url in (
        reverse("worklist"),
        reverse("worklist") + "?mrn=A-1001",
        reverse("patient_list") + "?q=A-1001",
        reverse("patient_detail", args=[case.patient_id]),
        reverse("case_detail", args=[case.pk]),
        reverse("case_create"),
        reverse("disagreements"),
        reverse("dashboard"),
        reverse("password_change"),
    ):
        response = rad_client.get(url)
        assert response.status_code == 200, url
        assert_protected(response, html=True)


def test_case_status_json_and_files(rad_client, prediction):
    case = prediction.job.image.case
    status = rad_client.get(reverse("case_status", args=[case.pk]))
    assert status.status_code == 200
    assert_protected(status, html=False)
    image = rad_client.get(reverse("image_file", args=[prediction.job.image_id]))
    assert image.status_code == 200
    assert "no-store" in image["Cache-Control"]


def test_department_admin_pages(client, department_admin):
    client.force_login(department_admin)
    for url in (reverse("user_list"), reverse("audit_log")):
        response = client.get(url)
        assert response.status_code == 200, url
        assert_protected(response, html=True)


def test_login_page_and_error_pages():
    anonymous = Client()
    login = anonymous.get(reverse("login"))
    assert login.status_code == 200
    assert_protected(login, html=True)
    missing = anonymous.get("/no-such-page/")
    assert missing.status_code == 404
    assert "no-store" in missing["Cache-Control"]


def test_django_admin_pages(client, django_user_model, prediction):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.org", "x-very-long-pw-1"))
    case = prediction.job.image.case
    for url in (
        reverse("admin:index"),
        reverse("admin:diagnosis_case_changelist"),
        reverse("admin:diagnosis_case_change", args=[case.pk]),
        reverse("admin:diagnosis_patient_add"),
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        assert_protected(response, html=True)


def test_swagger_ui_loads_its_start_up_script_as_a_file(rad_client):
    page = rad_client.get(reverse("api-docs"))
    assert page.status_code == 200
    assert_protected(page, html=True)
    scripts = re.findall(r'<script src="([^"]+)"', page.content.decode())
    start_up = [src for src in scripts if "script" in src and reverse("api-docs") in src]
    assert start_up, scripts
    script = rad_client.get(start_up[0].replace("&amp;", "&"))
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")


def test_api_answers(api, prediction):
    case = prediction.job.image.case
    for url in (
        "/api/v1/patients/?mrn=A-1001",
        f"/api/v1/patients/{case.patient_id}/",
        "/api/v1/cases/",
        f"/api/v1/cases/{case.pk}/",
        f"/api/v1/jobs/{prediction.job_id}/",
        f"/api/v1/predictions/{prediction.pk}/",
    ):
        response = api.get(url)
        assert response.status_code == 200, url
        assert response["Content-Type"].startswith("application/json")
        assert_protected(response, html=False)
    for missing in ("/api/v1/cases/999999/", "/api/v1/no-such-endpoint/"):
        response = api.get(missing)
        assert response.status_code == 404
        assert_protected(response, html=False)


# In a real browser: the policy blocks nothing the pages need -----------------------------------

RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (event) {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI + " " + event.sourceFile);
});
"""


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_pages_run_under_the_policy_in_chromium(browser, live_server, radiologist, django_user_model):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    patient = PatientFactory(department=radiologist.department, created_by=radiologist, mrn="A-1001")
    done = CaseFactory(patient=patient, created_by=radiologist)
    PredictionFactory(job__image__case=done, heatmap=ContentFile(png_bytes(), name="heatmap.png"))
    polling = CaseFactory(patient=patient, created_by=radiologist)
    InferenceJobFactory(image__case=polling, status="pending")
    site_admin = django_user_model.objects.create_superuser("root", "root@example.org", "x-very-long-pw-1")

    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_VIOLATIONS})
    wait = WebDriverWait(browser, 30)

    def visit(path: str, ready_selector: str) -> None:
        browser.get(f"{live_server.url}{path}")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ready_selector)))
        assert browser.execute_script("return window.__cspViolations") == [], path

    sign_in(browser, live_server, radiologist)
    visit("/", "main")
    visit("/patients/?q=A-1001", "main")
    visit(f"/cases/{done.pk}/", ".heatmap-overlay")
    visit(f"/cases/{polling.pk}/", "#case-live")
    polled = "return performance.getEntriesByType('resource').some(e => e.name.indexOf('/status/') > 0)"
    wait.until(lambda driver: driver.execute_script(polled))  # the status polling's fetch went out
    assert browser.execute_script("return window.__cspViolations") == []
    visit("/api/docs/", ".swagger-ui .info")  # Swagger UI's bundle and start-up script
    sign_in(browser, live_server, site_admin)
    visit(f"/admin/diagnosis/case/{done.pk}/change/", "#case_form")

    # The recorder does see what the policy blocks: an injected inline script.
    browser.execute_script("var s = document.createElement('script'); s.textContent = '1'; document.body.append(s)")
    wait.until(lambda driver: driver.execute_script("return window.__cspViolations.length"))
    assert "script-src" in browser.execute_script("return window.__cspViolations")[0]
