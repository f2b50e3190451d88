"""The audit log page: a department admin reads their own department's events, filtered and
paginated, newest first, with objects named and linked, a case page's picture reads grouped
under its case view, and a CSV export. Radiologists cannot open it; no admin sees another
department's."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

import pytest
from django.core.files.base import ContentFile
from django.http import StreamingHttpResponse
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django.asserts import assertContains, assertNotContains

from audit.models import AuditEvent
from audit.services import audit_record
from tests.factories import (
    CaseFactory,
    DepartmentAdminFactory,
    ImageFactory,
    PatientFactory,
    PredictionFactory,
    UserFactory,
    png_bytes,
)

pytestmark = pytest.mark.django_db
A = AuditEvent.Action


@pytest.fixture
def admin_browser(department_admin) -> Client:
    """The admin in a browser of their own, beside rad_client (both fixtures share `client`)."""
    browser = Client()
    browser.force_login(department_admin)
    return browser


def event_at(when: datetime, **kwargs) -> AuditEvent:
    event = AuditEvent(created_at=when, **kwargs)
    event.save()
    return event


def listed(response) -> list[AuditEvent]:
    return list(response.context["page"].object_list)


@pytest.fixture
def history(radiologist, outsider):
    """Department A: three events by rad_a and one by a colleague; department B: one."""
    colleague = UserFactory(username="rad_c", department=radiologist.department)
    now = timezone.now()
    dept_a = radiologist.department_id
    return {
        "old_view": event_at(
            now - timedelta(days=10),
            action=A.CASE_VIEW,
            actor=radiologist,
            actor_username="rad_a",
            department_id=dept_a,
            object_type="case",
            object_id="11",
        ),
        "upload": event_at(
            now - timedelta(days=2),
            action=A.UPLOAD,
            actor=radiologist,
            actor_username="rad_a",
            department_id=dept_a,
            object_type="case",
            object_id="12",
        ),
        "patient": event_at(
            now - timedelta(hours=1),
            action=A.PATIENT_VIEW,
            actor=colleague,
            actor_username="rad_c",
            department_id=dept_a,
            object_type="patient",
            object_id="5",
        ),
        "failed": event_at(
            now - timedelta(minutes=5),
            action=A.LOGIN_FAILED,
            actor_username="rad_a",
            department_id=dept_a,
            ip_address="203.0.113.66",
        ),
        "foreign": event_at(
            now - timedelta(minutes=1),
            action=A.CASE_VIEW,
            actor=outsider,
            actor_username="rad_b",
            department_id=outsider.department_id,
            object_type="case",
            object_id="99",
        ),
    }


def test_admin_sees_own_department_newest_first(admin_client, history):
    response = admin_client.get(reverse("audit_log"))
    assert response.status_code == 200
    events = [e for e in listed(response) if e.action != A.LOGIN]  # force_login's own event is there too
    assert events == [history["failed"], history["patient"], history["upload"], history["old_view"]]
    assertContains(response, "203.0.113.66")
    assertContains(response, "case #12")  # no such case here: the id as recorded, no link
    assertNotContains(response, f'href="{reverse("case_detail", args=[12])}"')
    assertContains(response, "(not logged in)")
    assertNotContains(response, "rad_b")


def test_another_departments_admin_sees_none_of_it(client, outsider, history):
    other_admin = DepartmentAdminFactory(username="admin_b", department=outsider.department)
    client.force_login(other_admin)
    events = listed(client.get(reverse("audit_log")))
    assert history["foreign"] in events
    assert not [e for e in events if e.department_id != outsider.department_id]


def test_radiologist_is_forbidden_like_on_the_user_pages(rad_client, history):
    assert rad_client.get(reverse("audit_log")).status_code == 403
    assert rad_client.get(reverse("user_list")).status_code == 403


def test_anonymous_is_sent_to_login(client):
    response = client.get(reverse("audit_log"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_site_admin_has_no_department_log(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.org", "x-very-long-pw"))
    assert client.get(reverse("audit_log")).status_code == 403


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"action": "upload"}, ["upload"]),
        ({"user": "RAD_C"}, ["patient"]),
        ({"object_type": "case"}, ["upload", "old_view"]),
        ({"object_type": "case", "object_id": "11"}, ["old_view"]),
        ({"action": "login_failed", "user": "rad_a"}, ["failed"]),
    ],
)
def test_filters(admin_client, history, params, expected):
    response = admin_client.get(reverse("audit_log"), params)
    assert response.status_code == 200
    assert listed(response) == [history[name] for name in expected]


def test_date_range_filter(admin_client, history):
    today = timezone.localdate()
    response = admin_client.get(
        reverse("audit_log"),
        {"date_from": (today - timedelta(days=3)).isoformat(), "date_to": (today - timedelta(days=1)).isoformat()},
    )
    assert listed(response) == [history["upload"]]


def test_bad_filters_are_a_400_with_the_reason(admin_client, history):
    today = timezone.localdate()
    response = admin_client.get(
        reverse("audit_log"), {"date_from": today.isoformat(), "date_to": (today - timedelta(days=5)).isoformat()}
    )
    assert response.status_code == 400
    assertContains(response, "The start date is after the end date.", status_code=400)
    response = admin_client.get(reverse("audit_log"), {"action": "delete_everything", "user": "rad_c"})
    assert response.status_code == 400
    assertContains(response, "Select a valid choice", status_code=400)
    assert listed(response) == [history["patient"]]  # the valid filter still applies


def test_pagination(admin_client, radiologist):
    for n in range(60):
        audit_record(action=A.CASE_VIEW, actor=radiologist, object_type="case", object_id=n)
    first = admin_client.get(reverse("audit_log"), {"action": "case_view"})
    assert len(listed(first)) == 50
    assert listed(first)[0].object_id == "59"
    assertContains(first, "Page 1 of 2")
    second = admin_client.get(reverse("audit_log"), {"action": "case_view", "page": 2})
    assert [e.object_id for e in listed(second)] == [str(n) for n in range(9, -1, -1)]


def test_nav_links_by_role(department_admin, rad_client):
    admin_client = Client()
    admin_client.force_login(department_admin)
    admin_page = admin_client.get(reverse("worklist"))
    assertContains(admin_page, f'href="{reverse("audit_log")}"')
    assertContains(admin_page, f'href="{reverse("dashboard")}"')
    rad_page = rad_client.get(reverse("worklist"))
    assertNotContains(rad_page, f'href="{reverse("audit_log")}"')
    assertContains(rad_page, f'href="{reverse("dashboard")}"')


# Names and links instead of "user #4" -------------------------------------------------------


@pytest.fixture
def objects(radiologist):
    """One of each object an event names, in department A."""
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, name="Ada Lovelace", mrn="XR-1")
    case = CaseFactory(patient=patient, created_by=radiologist)
    ImageFactory(case=case)  # image 1
    prediction = PredictionFactory(job__image__case=case)  # on image 2
    return {"patient": patient, "case": case, "prediction": prediction, "image": prediction.job.image}


def test_objects_are_named_and_linked(admin_client, radiologist, objects):
    radiologist.first_name, radiologist.last_name = "Grace", "Hopper"
    radiologist.save()
    case, image, prediction = objects["case"], objects["image"], objects["prediction"]
    for object_type, object_id in (
        ("user", radiologist.pk),
        ("patient", objects["patient"].pk),
        ("case", case.pk),
        ("image", image.pk),
        ("prediction", prediction.pk),
        ("job", prediction.job.pk),
    ):
        audit_record(action=A.RESULT_VIEW, actor=radiologist, object_type=object_type, object_id=object_id)

    page = admin_client.get(reverse("audit_log")).content.decode()

    case_url = reverse("case_detail", args=[case.pk])
    assert f'<a href="{reverse("user_edit", args=[radiologist.pk])}">Grace Hopper (rad_a)</a>' in page
    assert f'<a href="{reverse("patient_detail", args=[objects["patient"].pk])}">Ada Lovelace (MRN XR-1)</a>' in page
    assert f'<a href="{case_url}">case {case.pk} · Ada Lovelace</a>' in page
    assert f'<a href="{case_url}">image 2 of case {case.pk} · Ada Lovelace</a>' in page
    assert f'<a href="{case_url}">heatmap of image 2 of case {case.pk} · Ada Lovelace</a>' in page
    assert f'<a href="{case_url}">AI result of image 2 of case {case.pk} · Ada Lovelace</a>' in page
    for raw in ("user #", "patient #", "case #", "image #", "prediction #", "job #"):
        assert raw not in page


def test_another_departments_objects_are_not_named(admin_client, radiologist, outsider):
    foreign = CaseFactory(patient__department=outsider.department, patient__name="Foreign Patient")
    audit_record(action=A.CASE_VIEW, actor=radiologist, object_type="case", object_id=foreign.pk)
    response = admin_client.get(reverse("audit_log"))
    assertContains(response, f"case #{foreign.pk}")
    assertNotContains(response, "Foreign Patient")
    assertNotContains(response, f'href="{reverse("case_detail", args=[foreign.pk])}"')


def test_the_page_reads_names_in_a_fixed_number_of_queries(
    admin_client, radiologist, objects, django_assert_max_num_queries
):
    for _ in range(40):
        for object_type in ("case", "image", "prediction"):
            audit_record(
                action=A.IMAGE_VIEW, actor=radiologist, object_type=object_type, object_id=objects[object_type].pk
            )
    with django_assert_max_num_queries(25):
        assert admin_client.get(reverse("audit_log")).status_code == 200


# One page view's rows, grouped ---------------------------------------------------------------


@pytest.fixture
def case_with_heatmaps(radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, name="Ada Lovelace")
    case = CaseFactory(patient=patient, created_by=radiologist)
    for _ in range(3):
        PredictionFactory(job__image__case=case, heatmap=ContentFile(png_bytes(), name="heat.png"))
    return case


def open_case_page(client, case) -> None:
    """What a browser does: the case page, then each image and each heatmap it shows."""
    assert client.get(reverse("case_detail", args=[case.pk])).status_code == 200
    for image in case.images.all():
        assert client.get(reverse("image_file", args=[image.pk])).status_code == 200
        prediction = image.jobs.get().prediction
        assert client.get(reverse("prediction_heatmap", args=[prediction.pk])).status_code == 200


def test_a_case_view_and_its_picture_reads_are_one_row(admin_browser, rad_client, case_with_heatmaps):
    open_case_page(rad_client, case_with_heatmaps)
    recorded = AuditEvent.objects.filter(actor__username="rad_a", action__in=[A.CASE_VIEW, A.IMAGE_VIEW])
    assert recorded.count() == 1 + 2 * 3  # every read is still its own event

    response = admin_browser.get(reverse("audit_log"), {"user": "rad_a"})
    rows = response.context["rows"]
    views = [row for row in rows if row.event.action == A.CASE_VIEW]
    assert len(views) == 1
    assert len(views[0].grouped) == 6
    assert views[0].grouped_summary == "3 images and 3 heatmaps"
    assert not [row for row in rows if row.event.action == A.IMAGE_VIEW]
    assertContains(response, "with 3 images and 3 heatmaps")
    assertContains(response, f"image 3 of case {case_with_heatmaps.pk} · Ada Lovelace")


def test_reads_after_something_else_or_of_another_case_are_rows_of_their_own(
    admin_browser, rad_client, radiologist, case_with_heatmaps
):
    open_case_page(rad_client, case_with_heatmaps)
    other = CaseFactory(patient=case_with_heatmaps.patient, created_by=radiologist)
    other_image = ImageFactory(case=other)
    assert rad_client.get(reverse("worklist")).status_code == 200  # something else in between
    image = case_with_heatmaps.images.first()
    assert rad_client.get(reverse("image_file", args=[image.pk])).status_code == 200
    assert rad_client.get(reverse("case_detail", args=[other.pk])).status_code == 200
    assert rad_client.get(reverse("image_file", args=[image.pk])).status_code == 200  # not this case's
    assert rad_client.get(reverse("image_file", args=[other_image.pk])).status_code == 200

    rows = admin_browser.get(reverse("audit_log"), {"user": "rad_a"}).context["rows"]
    actions = [
        (row.event.action, row.event.object_id, len(row.grouped))
        for row in rows
        if row.event.action in (A.CASE_VIEW, A.IMAGE_VIEW, A.CASE_LIST)
    ]
    assert actions == [
        (A.IMAGE_VIEW, str(image.pk), 0),  # the first case's image, read from the other case's page
        (A.CASE_VIEW, str(other.pk), 1),  # with its own image, read after that
        (A.IMAGE_VIEW, str(image.pk), 0),  # read after the worklist
        (A.CASE_LIST, "", 0),
        (A.CASE_VIEW, str(case_with_heatmaps.pk), 6),
    ]


def test_another_users_reads_are_not_grouped_under_a_case_view(
    admin_browser, rad_client, department, case_with_heatmaps
):
    colleague = UserFactory(username="rad_c", department=department)
    assert rad_client.get(reverse("case_detail", args=[case_with_heatmaps.pk])).status_code == 200
    image = case_with_heatmaps.images.first()
    audit_record(action=A.IMAGE_VIEW, actor=colleague, object_type="image", object_id=image.pk)
    rows = admin_browser.get(reverse("audit_log")).context["rows"]
    view = next(row for row in rows if row.event.action == A.CASE_VIEW)
    assert view.grouped == []
    assert [row.event.actor_username for row in rows if row.event.action == A.IMAGE_VIEW] == ["rad_c"]


# CSV export ---------------------------------------------------------------------------------


def export(client, **params) -> tuple[StreamingHttpResponse, list[list[str]]]:
    response = client.get(reverse("audit_log_export"), params)
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)  # streamed, not built in memory
    text = b"".join(response.streaming_content).decode()
    return response, list(csv.reader(io.StringIO(text)))


def test_export_is_filtered_named_and_audited(admin_client, department_admin, radiologist, history, objects):
    audit_record(action=A.CASE_VIEW, actor=radiologist, object_type="case", object_id=objects["case"].pk)
    response, rows = export(admin_client, object_type="case")

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="xnet-audit-log-')
    assert "no-store" in response["Cache-Control"]
    header, body = rows[0], rows[1:]
    assert header[:6] == ["time (UTC)", "username", "user id", "action", "action code", "object"]
    expected = AuditEvent.objects.filter(department=department_admin.department, object_type="case")
    assert [row[4] for row in body] == [event.action for event in expected.order_by("-created_at", "-id")]
    assert len(body) == 4  # the factory's case_create, the view just now, the upload, the old view
    assert body[0][4] == "case_view"
    assert body[0][5] == f"case {objects['case'].pk} · {objects['patient'].name}"
    assert body[2][5] == "case #12"
    assert "rad_b" not in {row[1] for row in body}  # another department's event

    exported = AuditEvent.objects.get(action=A.FILE_DOWNLOAD, object_type="audit_log")
    assert exported.actor == department_admin
    assert exported.detail == {"export": "csv", "filters": {"object_type": "case"}}


def test_export_of_everything_includes_its_own_event(admin_client, history):
    _, rows = export(admin_client)
    assert rows[1][4] == "file_download"
    assert rows[1][5] == "audit log"
    assert len(rows) - 1 == AuditEvent.objects.filter(department_id=history["upload"].department_id).count()


def test_export_cells_never_start_a_formula(admin_client, department):
    audit_record(action=A.LOGIN_FAILED, actor_username='=HYPERLINK("http://x")', department_id=department.pk)
    _, rows = export(admin_client, action="login_failed")
    assert rows[1][1] == '\'=HYPERLINK("http://x")'


def test_export_is_for_department_admins_only(rad_client):
    assert rad_client.get(reverse("audit_log_export")).status_code == 403
    assert Client().get(reverse("audit_log_export")).status_code == 302  # to the login page
    assert not AuditEvent.objects.filter(object_type="audit_log").exists()


def test_export_with_bad_filters_is_the_page_with_errors(admin_client):
    response = admin_client.get(reverse("audit_log_export"), {"action": "delete_everything"})
    assertContains(response, "Select a valid choice", status_code=400)
    assert not AuditEvent.objects.filter(object_type="audit_log").exists()


def test_the_page_links_the_export_with_its_filters(admin_client, history):
    response = admin_client.get(reverse("audit_log"), {"object_type": "case", "page": "1"})
    assertContains(response, f'href="{reverse("audit_log_export")}?object_type=case"')
