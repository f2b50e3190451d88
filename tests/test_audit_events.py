"""Each audited action leaves one event with the right actor, object, department and address;
unsuccessful requests and unaudited pages leave none, and a failed insert never breaks a page."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLResolver, get_resolver, reverse

from audit.middleware import ROUTES
from audit.models import AuditEvent
from diagnosis.models import Case
from tests.dicom_files import make_dicom
from tests.dicom_files import upload as dicom_upload
from tests.factories import (
    DEFAULT_PASSWORD,
    CaseFactory,
    ImageFactory,
    PatientFactory,
    PredictionFactory,
    UserFactory,
    png_bytes,
)

pytestmark = pytest.mark.django_db
A = AuditEvent.Action
CLIENT = {"REMOTE_ADDR": "198.51.100.7", "HTTP_USER_AGENT": "Mozilla/5.0 (XNET test)"}


@pytest.fixture
def case(radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, mrn="A-1001")
    return CaseFactory(patient=patient, created_by=radiologist)


@pytest.fixture
def image(case):
    return ImageFactory(case=case)


@pytest.fixture
def foreign_image(outsider):
    return ImageFactory(case=CaseFactory(patient=PatientFactory(department=outsider.department, created_by=outsider)))


def mark() -> int:
    """The newest event's id: what a test's setup (patients and cases created) has recorded."""
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def only_event(**filters) -> AuditEvent:
    """The one event matching the filters (there must be exactly one)."""
    return AuditEvent.objects.get(**filters)


def assert_event(event: AuditEvent, *, actor, object_type: str, object_id, ip: str = CLIENT["REMOTE_ADDR"]) -> None:
    assert event.actor == actor
    assert event.actor_username == actor.username
    assert event.department_id == actor.department_id
    assert event.object_type == object_type
    assert event.object_id == str(object_id)
    assert event.ip_address == ip
    assert event.user_agent == CLIENT["HTTP_USER_AGENT"]


# Logging in and out ----------------------------------------------------------------------


def test_login_is_recorded(client, radiologist):
    response = client.post(reverse("login"), {"username": "rad_a", "password": DEFAULT_PASSWORD}, **CLIENT)
    assert response.status_code == 302
    event = only_event(action=A.LOGIN)
    assert_event(event, actor=radiologist, object_type="user", object_id=radiologist.pk)
    assert event.method == "POST"
    assert event.path == reverse("login")


def test_failed_login_records_the_typed_username_under_that_users_department(client, radiologist):
    response = client.post(reverse("login"), {"username": "rad_a", "password": "wrong"}, **CLIENT)
    assert response.status_code == 200  # the form again, with its error
    event = only_event(action=A.LOGIN_FAILED)
    assert event.actor is None
    assert event.actor_username == "rad_a"
    assert event.department_id == radiologist.department_id
    assert event.ip_address == CLIENT["REMOTE_ADDR"]
    assert event.detail == {"known_user": True}
    assert not AuditEvent.objects.filter(action=A.LOGIN).exists()


def test_failed_login_with_unknown_username_belongs_to_no_department(client, radiologist):
    client.post(reverse("login"), {"username": "Robert'); DROP TABLE", "password": "x"}, **CLIENT)
    event = only_event(action=A.LOGIN_FAILED)
    assert event.actor_username == "Robert'); DROP TABLE"
    assert event.department_id is None
    assert event.detail == {"known_user": False}


def test_logout_is_recorded(client, radiologist):
    client.force_login(radiologist)
    assert client.post(reverse("logout"), **CLIENT).status_code == 302
    assert_event(only_event(action=A.LOGOUT), actor=radiologist, object_type="user", object_id=radiologist.pk)


def test_password_change_is_recorded_and_a_failed_one_is_not(rad_client, radiologist):
    bad = {"old_password": "wrong", "new_password1": "lung-window-1400", "new_password2": "lung-window-1400"}
    assert rad_client.post(reverse("password_change"), bad, **CLIENT).status_code == 200
    assert not AuditEvent.objects.filter(action=A.PASSWORD_CHANGE).exists()
    good = {**bad, "old_password": DEFAULT_PASSWORD}
    assert rad_client.post(reverse("password_change"), good, **CLIENT).status_code == 302
    event = only_event(action=A.PASSWORD_CHANGE)
    assert_event(event, actor=radiologist, object_type="user", object_id=radiologist.pk)


# Pages -----------------------------------------------------------------------------------


def test_case_view_is_recorded(rad_client, radiologist, case):
    assert rad_client.get(reverse("case_detail", args=[case.pk]), **CLIENT).status_code == 200
    event = only_event(action=A.CASE_VIEW)
    assert_event(event, actor=radiologist, object_type="case", object_id=case.pk)
    assert event.path == reverse("case_detail", args=[case.pk])
    assert event.detail == {"status": 200}


def test_patient_view_is_recorded(rad_client, radiologist, case):
    assert rad_client.get(reverse("patient_detail", args=[case.patient_id]), **CLIENT).status_code == 200
    assert_event(only_event(action=A.PATIENT_VIEW), actor=radiologist, object_type="patient", object_id=case.patient_id)


def test_image_view_is_recorded(rad_client, radiologist, image):
    assert rad_client.get(reverse("image_file", args=[image.pk]), **CLIENT).status_code == 200
    assert_event(only_event(action=A.IMAGE_VIEW), actor=radiologist, object_type="image", object_id=image.pk)


def test_another_departments_objects_are_404_and_record_nothing(rad_client, foreign_image):
    before = mark()
    assert rad_client.get(reverse("case_detail", args=[foreign_image.case_id])).status_code == 404
    assert rad_client.get(reverse("image_file", args=[foreign_image.pk])).status_code == 404
    assert not AuditEvent.objects.filter(id__gt=before).exclude(action=A.LOGIN).exists()


def test_status_polling_records_nothing(rad_client, case):
    before = mark()
    assert rad_client.get(reverse("case_status", args=[case.pk])).status_code == 200
    assert not AuditEvent.objects.filter(id__gt=before).exclude(action=A.LOGIN).exists()


def test_new_case_upload_is_recorded_with_the_new_case(rad_client, radiologist, case):
    form = {
        "patient_mode": "existing",
        "mrn": "A-1001",
        "modality": "xray",
        "indication": "Fever.",
        "images": [SimpleUploadedFile("chest.png", png_bytes(), content_type="image/png")],
    }
    response = rad_client.post(reverse("case_create"), form, **CLIENT)
    assert response.status_code == 302
    new_case = case.patient.cases.exclude(pk=case.pk).get()
    assert_event(only_event(action=A.UPLOAD), actor=radiologist, object_type="case", object_id=new_case.pk)


def test_case_upload_is_recorded_and_a_refused_one_is_not(rad_client, radiologist, case):
    url = reverse("case_upload", args=[case.pk])
    refused = rad_client.post(url, {"images": [SimpleUploadedFile("x.png", b"not an image")]}, **CLIENT)
    assert refused.status_code == 400
    assert not AuditEvent.objects.filter(action=A.UPLOAD).exists()
    good = rad_client.post(url, {"images": [SimpleUploadedFile("c.png", png_bytes())]}, **CLIENT)
    assert good.status_code == 302
    assert_event(only_event(action=A.UPLOAD), actor=radiologist, object_type="case", object_id=case.pk)


# API (session-authenticated here; token use has its own tests) -----------------------------


@pytest.fixture
def session_api(rad_client):
    return rad_client


@pytest.mark.parametrize(
    ("name", "action", "object_type"),
    [
        ("api:case-detail", A.CASE_VIEW, "case"),
        ("api:patient-detail", A.PATIENT_VIEW, "patient"),
        ("api:image-detail", A.IMAGE_VIEW, "image"),
        ("api:image-file", A.FILE_DOWNLOAD, "image"),
    ],
)
def test_api_reads_are_recorded(api, radiologist, image, name, action, object_type):
    pk = {"case": image.case_id, "patient": image.case.patient_id, "image": image.pk}[object_type]
    response = api.get(reverse(name, args=[pk]), **CLIENT)
    assert response.status_code == 200
    event = only_event(action=action)
    assert_event(event, actor=radiologist, object_type=object_type, object_id=pk)
    assert event.detail["via"] == "api"


def test_api_upload_is_recorded(api, radiologist, case):
    response = api.post(
        reverse("api:case-images", args=[case.pk]),
        {"file": SimpleUploadedFile("chest.png", png_bytes())},
        format="multipart",
        **CLIENT,
    )
    assert response.status_code == 202
    assert_event(only_event(action=A.UPLOAD), actor=radiologist, object_type="case", object_id=case.pk)


def test_api_404_for_another_department_records_nothing_but_token_use(api, foreign_image):
    before = mark()
    assert api.get(reverse("api:image-file", args=[foreign_image.pk])).status_code == 404
    assert list(AuditEvent.objects.filter(id__gt=before).values_list("action", flat=True)) == [A.API_TOKEN_USE]


# User management -------------------------------------------------------------------------


def test_user_management_is_recorded(client, department_admin):
    client.force_login(department_admin)
    form = {
        "username": "new_rad",
        "role": "radiologist",
        "password1": "thoracic-spine-77",
        "password2": "thoracic-spine-77",
        "email": "",
        "first_name": "",
        "last_name": "",
    }
    assert client.post(reverse("user_create"), form, **CLIENT).status_code == 302
    created = department_admin.department.users.get(username="new_rad")
    event = only_event(action=A.USER_CREATE)
    assert_event(event, actor=department_admin, object_type="user", object_id=created.pk)
    assert event.detail == {"username": "new_rad", "role": "radiologist"}

    edit = reverse("user_edit", args=[created.pk])
    assert client.post(edit, {"action": "role", "role": "department_admin"}, **CLIENT).status_code == 302
    role = only_event(action=A.USER_ROLE_CHANGE)
    assert_event(role, actor=department_admin, object_type="user", object_id=created.pk)
    assert role.detail == {"username": "new_rad", "from": "radiologist", "to": "department_admin"}

    assert client.post(edit, {"action": "deactivate"}, **CLIENT).status_code == 302
    assert_event(only_event(action=A.USER_DEACTIVATE), actor=department_admin, object_type="user", object_id=created.pk)
    assert client.post(edit, {"action": "reactivate"}, **CLIENT).status_code == 302
    assert_event(only_event(action=A.USER_REACTIVATE), actor=department_admin, object_type="user", object_id=created.pk)


def test_refused_user_management_records_nothing(client, department_admin, outsider):
    client.force_login(department_admin)
    assert client.post(reverse("user_edit", args=[outsider.pk]), {"action": "deactivate"}).status_code == 404
    own = reverse("user_edit", args=[department_admin.pk])
    assert client.post(own, {"action": "deactivate"}).status_code == 400  # not yourself
    assert not AuditEvent.objects.exclude(action=A.LOGIN).exists()


# Where from ------------------------------------------------------------------------------


def test_forwarded_for_is_ignored_without_trusted_proxies(rad_client, case):
    rad_client.get(reverse("case_detail", args=[case.pk]), REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert only_event(action=A.CASE_VIEW).ip_address == "10.0.0.2"


def test_forwarded_for_is_believed_from_a_trusted_proxy(rad_client, case, settings):
    settings.XNET_TRUSTED_PROXIES = ["10.0.0.2", "10.0.0.3"]
    url = reverse("case_detail", args=[case.pk])
    # The client put a fake address first; our two proxies appended the real one and themselves.
    rad_client.get(url, REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.9, 10.0.0.3")
    rad_client.get(url, REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="garbage")
    rad_client.get(url, REMOTE_ADDR="192.0.2.50", HTTP_X_FORWARDED_FOR="203.0.113.9")  # not a proxy of ours
    addresses = list(AuditEvent.objects.filter(action=A.CASE_VIEW).order_by("id").values_list("ip_address", flat=True))
    assert addresses == ["203.0.113.9", "10.0.0.2", "192.0.2.50"]


def test_a_failed_insert_is_logged_and_the_page_still_answers(rad_client, case, caplog):
    # PostgreSQL refuses NUL characters in text: the insert fails for real.
    response = rad_client.get(reverse("case_detail", args=[case.pk]), HTTP_USER_AGENT="evil\x00agent")
    assert response.status_code == 200
    assert "Could not record audit event case_view" in caplog.text
    assert not AuditEvent.objects.filter(action=A.CASE_VIEW).exists()
    # The request's transaction is still usable afterwards.
    assert rad_client.get(reverse("case_detail", args=[case.pk])).status_code == 200
    assert AuditEvent.objects.filter(action=A.CASE_VIEW).count() == 1


def test_department_is_the_actors_even_for_a_site_admin(client, django_user_model, case):
    site_admin = django_user_model.objects.create_superuser("root", "root@example.org", "x-very-long-pw")
    client.force_login(site_admin)
    client.post(reverse("logout"))
    event = only_event(action=A.LOGOUT)
    assert event.actor == site_admin
    assert event.department_id is None


def test_events_belong_to_the_department_of_whoever_acted(radiologist, outsider):
    colleague = UserFactory(username="rad_a2", department=radiologist.department)
    for user in (radiologist, colleague, outsider):
        Client().post(reverse("login"), {"username": user.username, "password": DEFAULT_PASSWORD})
    departments = dict(AuditEvent.objects.filter(action=A.LOGIN).values_list("actor_username", "department_id"))
    assert departments == {
        "rad_a": radiologist.department_id,
        "rad_a2": radiologist.department_id,
        "rad_b": outsider.department_id,
    }


# Sign-off, addenda and reports -----------------------------------------------------------


@pytest.fixture
def predicted_case(case):
    PredictionFactory(job__image__case=case)  # pneumonia 0.7
    return case


def test_sign_off_addendum_and_pdf_on_pages_are_recorded(rad_client, radiologist, predicted_case):
    case = predicted_case
    sign = {"decision": "agree", "final_label": "", "other_finding": "", "impression": "Consolidation."}
    assert rad_client.post(reverse("report_sign", args=[case.pk]), sign, **CLIENT).status_code == 302
    assert_event(only_event(action=A.SIGN_OFF), actor=radiologist, object_type="case", object_id=case.pk)
    # Signing twice is refused (409) and is not a second sign-off event.
    assert rad_client.post(reverse("report_sign", args=[case.pk]), sign, **CLIENT).status_code == 409
    assert AuditEvent.objects.filter(action=A.SIGN_OFF).count() == 1

    add = rad_client.post(reverse("report_addendum", args=[case.pk]), {"text": "Called the ward."}, **CLIENT)
    assert add.status_code == 302
    assert_event(only_event(action=A.ADDENDUM), actor=radiologist, object_type="case", object_id=case.pk)

    assert rad_client.get(reverse("report_pdf", args=[case.pk]), **CLIENT).status_code == 200
    assert_event(only_event(action=A.REPORT_DOWNLOAD), actor=radiologist, object_type="case", object_id=case.pk)


def test_sign_off_addendum_and_pdf_in_the_api_are_recorded(api, radiologist, predicted_case):
    case = predicted_case
    base = f"/api/v1/cases/{case.pk}/"
    payload = {"agrees_with_ai": True, "impression": "Consolidation."}
    assert api.post(f"{base}report/", payload, format="json", **CLIENT).status_code == 201
    assert_event(only_event(action=A.SIGN_OFF), actor=radiologist, object_type="case", object_id=case.pk)
    assert api.post(f"{base}report/addenda/", {"text": "Called."}, format="json").status_code == 201
    assert only_event(action=A.ADDENDUM).detail == {"status": 201, "via": "api"}
    assert api.get(f"{base}report.pdf").status_code == 200
    assert only_event(action=A.REPORT_DOWNLOAD).object_id == str(case.pk)
    assert api.get(f"{base}report/").status_code == 200
    assert only_event(action=A.CASE_VIEW).object_id == str(case.pk)


def test_refused_sign_off_of_another_departments_case_records_nothing(rad_client, foreign_image):
    sign = {"decision": "agree", "impression": "x"}
    assert rad_client.post(reverse("report_sign", args=[foreign_image.case_id]), sign).status_code == 404
    assert not AuditEvent.objects.filter(action=A.SIGN_OFF).exists()


# Heatmaps and the route table ------------------------------------------------------------


@pytest.fixture
def heatmap(case):
    return PredictionFactory(job__image__case=case, heatmap=ContentFile(png_bytes(), name="heatmap.png"))


def test_heatmap_views_are_recorded(rad_client, api, radiologist, heatmap):
    assert rad_client.get(reverse("prediction_heatmap", args=[heatmap.pk]), **CLIENT).status_code == 200
    assert_event(only_event(action=A.IMAGE_VIEW), actor=radiologist, object_type="prediction", object_id=heatmap.pk)
    assert api.get(reverse("api:prediction-heatmap", args=[heatmap.pk]), **CLIENT).status_code == 200
    assert_event(only_event(action=A.FILE_DOWNLOAD), actor=radiologist, object_type="prediction", object_id=heatmap.pk)


def url_names(resolver=None, namespace: str = "") -> set[str]:
    names = set()
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            names |= url_names(pattern, inner)
        elif pattern.name:
            names.add(f"{namespace}{pattern.name}")
    return names


def test_every_audited_url_name_exists():
    """A renamed URL would silently drop out of the audit trail."""
    assert {name for name, _ in ROUTES} <= url_names()


def test_api_case_from_dicom_is_recorded_with_the_new_case(api, radiologist):
    response = api.post(
        "/api/v1/cases/from-dicom/", {"file": dicom_upload(make_dicom()), "indication": "Cough."}, format="multipart"
    )
    assert response.status_code == 201, response.content
    new_case = Case.objects.get()
    event = only_event(action=A.UPLOAD)
    assert (event.actor, event.object_type, event.object_id) == (radiologist, "case", str(new_case.pk))
    assert event.department_id == radiologist.department_id
