"""Department isolation over every page: department B never sees, changes or learns about
department A's objects. Another department's object is a 404, exactly like a missing one."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from pytest_django.asserts import assertNotContains

from diagnosis.models import Image
from tests.conftest import media_files
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


@pytest.fixture
def a_objects(radiologist):
    """Department A's data: a patient, a case, an image with a finished job, and a user."""
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, mrn="A-SECRET", name="Ann A")
    case = CaseFactory(patient=patient, created_by=radiologist, indication="A-only indication")
    image = ImageFactory(case=case)
    PredictionFactory(job__image=image)
    colleague = UserFactory(username="colleague_a", department=radiologist.department)
    return {"patient": patient, "case": case, "image": image, "user": colleague}


@pytest.fixture
def b_admin(other_department):
    """A department admin of B: the most privileged department user, still blind to A."""
    return DepartmentAdminFactory(username="admin_b", department=other_department)


@pytest.fixture(params=["radiologist", "department_admin"])
def b_client(request, client, outsider, b_admin):
    client.force_login(outsider if request.param == "radiologist" else b_admin)
    return client


def without_csrf(content: bytes) -> bytes:
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", content)


GET_PAGES = [
    ("patient_detail", "patient"),
    ("case_detail", "case"),
    ("case_status", "case"),
    ("image_file", "image"),
    ("user_edit", "user"),
]


@pytest.mark.parametrize(("url_name", "key"), GET_PAGES)
def test_other_departments_objects_are_404(b_client, a_objects, url_name, key):
    response = b_client.get(reverse(url_name, args=[a_objects[key].pk]))
    assert response.status_code == 404
    assertNotContains(response, "A-SECRET", status_code=404)


def test_missing_and_foreign_objects_look_the_same(b_client, a_objects):
    foreign = b_client.get(reverse("case_detail", args=[a_objects["case"].pk]))
    missing = b_client.get(reverse("case_detail", args=[999_999]))
    assert foreign.status_code == missing.status_code == 404
    # Same page, byte for byte, apart from the per-request masked CSRF token.
    assert without_csrf(foreign.content) == without_csrf(missing.content)


def test_upload_to_other_departments_case_is_404_and_writes_nothing(b_client, a_objects, settings):
    before = list(media_files(settings.MEDIA_ROOT))
    response = b_client.post(
        reverse("case_upload", args=[a_objects["case"].pk]),
        {"images": [SimpleUploadedFile("x.png", png_bytes(), content_type="image/png")]},
    )
    assert response.status_code == 404
    assert Image.objects.count() == 1
    assert media_files(settings.MEDIA_ROOT) == before


def test_user_edit_post_on_other_departments_user_is_404(client, b_admin, a_objects):
    client.force_login(b_admin)
    user = a_objects["user"]
    for data in ({"action": "deactivate"}, {"action": "role", "role": "department_admin"}):
        assert client.post(reverse("user_edit", args=[user.pk]), data).status_code == 404
    user.refresh_from_db()
    assert (user.is_active, user.role) == (True, "radiologist")


def test_lists_never_show_other_departments_data(b_client, a_objects, outsider):
    own = CaseFactory(patient=PatientFactory(department=outsider.department, created_by=outsider))
    worklist = b_client.get(reverse("worklist"))
    assert f'data-case-id="{own.pk}"' in worklist.content.decode()
    assert f'data-case-id="{a_objects["case"].pk}"' not in worklist.content.decode()
    assertNotContains(worklist, "A-SECRET")
    # Searching for A's record number does not find it either.
    assertNotContains(b_client.get(reverse("worklist"), {"q": "A-SECRET"}), 'data-case-id="')
    assertNotContains(b_client.get(reverse("patient_list")), "Ann A")
    assertNotContains(b_client.get(reverse("patient_list"), {"q": "A-SECRET"}), "Ann A")


def test_other_departments_users_not_listed(client, b_admin, a_objects):
    client.force_login(b_admin)
    response = client.get(reverse("user_list"))
    assert response.status_code == 200
    assertNotContains(response, "colleague_a")
    assertNotContains(response, "rad_a")


def test_case_create_cannot_reach_other_departments_patient(b_client, a_objects, settings):
    response = b_client.post(
        reverse("case_create"),
        {
            "patient_mode": "existing",
            "mrn": "A-SECRET",
            "modality": "xray",
            "images": [SimpleUploadedFile("x.png", png_bytes(), content_type="image/png")],
        },
    )
    assert response.status_code == 400
    assert a_objects["patient"].cases.count() == 1
    assert Image.objects.count() == 1
