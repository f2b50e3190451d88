"""Case pages: create a case with images, add images, the case page, its status JSON and the
private image file view. Every bad upload is a 400 page with the reason, and writes nothing."""

from __future__ import annotations

import html
import io
import re
import struct
import zlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image as PILImage
from pytest_django.asserts import assertContains, assertNotContains

from diagnosis import services
from diagnosis.models import Case, Image, InferenceJob, Patient
from tests.conftest import media_files
from tests.factories import (
    CaseFactory,
    ImageFactory,
    InferenceJobFactory,
    ModelDeploymentFactory,
    PatientFactory,
    PredictionFactory,
    assistive,
    png_bytes,
)

pytestmark = pytest.mark.django_db


# Inputs ----------------------------------------------------------------------------------


def gif_bytes() -> bytes:
    buffer = io.BytesIO()
    PILImage.linear_gradient("L").resize((128, 128)).save(buffer, format="GIF")
    return buffer.getvalue()


def huge_png_bytes(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny file whose header claims 900 megapixels: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
        + chunk(b"IEND", b"")
    )


def upload(data: bytes, name: str = "chest.png", content_type: str = "image/png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


BAD_UPLOADS = {
    "text file named .png": (lambda: b"this is a discharge letter, not an image\n", "not an image XNET can read"),
    "gif": (gif_bytes, "Unsupported image format GIF"),
    "truncated png": (lambda: png_bytes(256, 256)[:-200], "truncated or corrupt"),
    "empty file": (lambda: b"", "The file is empty (0 bytes)."),
    "huge dimensions": (huge_png_bytes, "too many pixels"),
}


def assert_nothing_written(settings) -> None:
    assert not Image.objects.exists()
    assert not InferenceJob.objects.exists()
    assert media_files(settings.MEDIA_ROOT) == []


def error_text(response) -> str:
    """The page's text with tags removed, so assertions read like what the user sees."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode())))


@pytest.fixture
def patient(radiologist):
    return PatientFactory(department=radiologist.department, created_by=radiologist, mrn="A-1001", name="Ada Lovelace")


@pytest.fixture
def case(patient, radiologist):
    return CaseFactory(patient=patient, created_by=radiologist)


def create_form(**overrides) -> dict:
    data = {
        "patient_mode": "existing",
        "mrn": "A-1001",
        "modality": "xray",
        "indication": "Fever and cough.",
        "images": [upload(png_bytes())],
    }
    data.update(overrides)
    return data


# Creating a case -------------------------------------------------------------------------


def test_new_case_form_renders(rad_client):
    response = rad_client.get(reverse("case_create"), {"mrn": "A-1001"})
    assert response.status_code == 200
    assertContains(response, 'enctype="multipart/form-data"')
    assertContains(response, 'name="images"')
    assertContains(response, "multiple")
    assertContains(response, 'value="A-1001"')


def test_create_case_for_existing_patient_with_two_images(
    rad_client, patient, radiologist, chest_xray_bytes, settings, django_capture_on_commit_callbacks
):
    files = [upload(chest_xray_bytes, "front.jpg", "image/jpeg"), upload(png_bytes(300, 200), "side.png")]
    with django_capture_on_commit_callbacks() as callbacks:
        response = rad_client.post(reverse("case_create"), create_form(images=files))
    case = Case.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("case_detail", args=[case.pk])
    assert (case.patient, case.modality, case.created_by) == (patient, "xray", radiologist)
    assert case.indication == "Fever and cough."
    images = list(case.images.order_by("id"))
    assert [(i.original_name, i.format, i.width, i.height) for i in images] == [
        ("front.jpg", "JPEG", 224, 224),
        ("side.png", "PNG", 300, 200),
    ]
    assert all(i.uploaded_by == radiologist for i in images)
    assert InferenceJob.objects.filter(image__case=case, status="pending").count() == 2
    assert len(callbacks) == 2  # one job published per image, after commit
    assert len(media_files(settings.MEDIA_ROOT)) == 2

    page = rad_client.get(response["Location"])
    assertContains(page, "Case created; 2 images queued for classification.")


def test_create_case_registers_new_patient(rad_client, radiologist):
    data = create_form(
        patient_mode="new", mrn="B-2002", name="Grace Hopper", birth_date="1950-12-09", sex="F", modality="ct"
    )
    response = rad_client.post(reverse("case_create"), data)
    assert response.status_code == 302
    patient = Patient.objects.get(mrn="B-2002")
    assert (patient.name, patient.department, patient.created_by, patient.sex) == (
        "Grace Hopper",
        radiologist.department,
        radiologist,
        "F",
    )
    assert patient.cases.get().modality == "ct"


def test_create_case_refuses_a_birth_date_in_the_future_and_writes_nothing(rad_client):
    import datetime as dt

    from django.utils import timezone

    tomorrow = (timezone.localdate() + dt.timedelta(days=1)).isoformat()
    data = create_form(patient_mode="new", mrn="B-2003", name="Not Born", birth_date=tomorrow, sex="F")
    response = rad_client.post(reverse("case_create"), data)
    assert response.status_code == 400
    assert "A birth date cannot be in the future." in response.content.decode()
    assert not Patient.objects.filter(mrn="B-2003").exists()


@pytest.mark.parametrize("bad", BAD_UPLOADS.values(), ids=BAD_UPLOADS.keys())
def test_create_case_bad_image_is_400_and_writes_nothing(rad_client, patient, settings, bad):
    make, message = bad
    response = rad_client.post(
        reverse("case_create"),
        create_form(patient_mode="new", mrn="N-1", name="New Person", images=[upload(make(), "x.png")]),
    )
    assert response.status_code == 400
    assert message in error_text(response)
    assert "x.png" in error_text(response)  # the message names the file
    assert not Case.objects.exists()
    assert not Patient.objects.filter(mrn="N-1").exists()  # the new patient is rolled back too
    assert_nothing_written(settings)


def test_create_case_file_over_size_limit(rad_client, patient, settings):
    settings.XNET_MAX_UPLOAD_BYTES = 1024
    response = rad_client.post(reverse("case_create"), create_form(images=[upload(png_bytes(512, 512))]))
    assert response.status_code == 400
    assert "the upload limit is 0.0 MB" in error_text(response)
    assert not Case.objects.exists()
    assert_nothing_written(settings)


def test_create_case_pixel_limit(rad_client, patient, settings):
    settings.XNET_MAX_IMAGE_PIXELS = 100 * 100
    response = rad_client.post(reverse("case_create"), create_form(images=[upload(png_bytes(200, 200))]))
    assert response.status_code == 400
    assert "200x200 pixels" in error_text(response)
    assert_nothing_written(settings)


def test_one_bad_file_among_good_ones_rejects_all(rad_client, patient, settings, chest_xray_bytes):
    files = [upload(chest_xray_bytes, "good.jpg", "image/jpeg"), upload(gif_bytes(), "bad.gif", "image/gif")]
    response = rad_client.post(reverse("case_create"), create_form(images=files))
    assert response.status_code == 400
    assert "bad.gif: Unsupported image format GIF" in error_text(response)
    assert not Case.objects.exists()
    assert_nothing_written(settings)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"modality": "mri"}, "Select a valid choice. mri is not one of the available choices."),
        ({"mrn": "NOPE-404"}, "No patient with record number NOPE-404 in your department."),
        ({"patient_mode": "new", "mrn": "A-1001", "name": "Someone"}, "Record number A-1001 is already registered"),
        ({"patient_mode": "new", "mrn": "N-5", "name": ""}, "Enter the new patient's name."),
        ({"images": []}, "Choose at least one image to upload."),
        ({"patient_mode": "maybe"}, "Select a valid choice."),
    ],
    ids=["unknown modality", "unknown patient", "duplicate mrn", "new patient without name", "no image", "bad mode"],
)
def test_create_case_bad_form_is_400(rad_client, patient, settings, overrides, message):
    response = rad_client.post(reverse("case_create"), create_form(**overrides))
    assert response.status_code == 400
    assert message in error_text(response)
    assert not Case.objects.exists()
    assert Patient.objects.count() == 1
    assert_nothing_written(settings)


def test_create_case_for_other_departments_patient_is_unknown(rad_client, outsider, settings):
    PatientFactory(department=outsider.department, created_by=outsider, mrn="B-7")
    response = rad_client.post(reverse("case_create"), create_form(mrn="B-7"))
    assert response.status_code == 400
    assert "No patient with record number B-7 in your department." in error_text(response)
    assert not Case.objects.exists()
    assert_nothing_written(settings)


def test_site_admin_without_department_gets_a_form_error(client, django_user_model, settings):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "a-long-site-password")
    client.force_login(admin)
    data = create_form(patient_mode="new", mrn="S-1", name="Someone")
    response = client.post(reverse("case_create"), data)
    assert response.status_code == 400
    assert "Only members of a department can register patients." in error_text(response)
    assert not Patient.objects.exists()
    assert_nothing_written(settings)


# Adding images to a case -----------------------------------------------------------------


def test_case_upload_adds_images(rad_client, case, settings, chest_xray_bytes):
    response = rad_client.post(
        reverse("case_upload", args=[case.pk]), {"images": [upload(chest_xray_bytes, "c.jpg", "image/jpeg")]}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("case_detail", args=[case.pk])
    assert case.images.get().jobs.get().status == "pending"
    assert len(media_files(settings.MEDIA_ROOT)) == 1


@pytest.mark.parametrize("bad", BAD_UPLOADS.values(), ids=BAD_UPLOADS.keys())
def test_case_upload_bad_image_is_400_on_the_case_page(rad_client, case, settings, bad):
    make, message = bad
    response = rad_client.post(reverse("case_upload", args=[case.pk]), {"images": [upload(make(), "x.png")]})
    assert response.status_code == 400
    assert message in error_text(response)
    assertContains(response, f"Case #{case.pk}", status_code=400)  # still the case page
    assert_nothing_written(settings)


def test_case_upload_size_limit(rad_client, case, settings, chest_xray_bytes):
    settings.XNET_MAX_UPLOAD_BYTES = len(chest_xray_bytes) - 1
    response = rad_client.post(reverse("case_upload", args=[case.pk]), {"images": [upload(chest_xray_bytes)]})
    assert response.status_code == 400
    assert "the upload limit is" in error_text(response)
    assert_nothing_written(settings)


def test_case_upload_without_file_is_400(rad_client, case, settings):
    response = rad_client.post(reverse("case_upload", args=[case.pk]), {})
    assert response.status_code == 400
    assert "Choose at least one image to upload." in error_text(response)
    assert_nothing_written(settings)


def test_case_upload_to_other_departments_case_is_404(rad_client, outsider, settings):
    other = CaseFactory(patient=PatientFactory(department=outsider.department, created_by=outsider))
    response = rad_client.post(reverse("case_upload", args=[other.pk]), {"images": [upload(png_bytes())]})
    assert response.status_code == 404
    assert_nothing_written(settings)


def test_case_upload_get_is_not_allowed(rad_client, case):
    assert rad_client.get(reverse("case_upload", args=[case.pk])).status_code == 405


# The case page ---------------------------------------------------------------------------


def test_case_page_shows_result_with_probability_bars(rad_client, case):
    department = case.patient.department
    assistive(ModelDeploymentFactory(department=department, model_name="xray-tiny", model_version="1.0.0"))
    prediction = PredictionFactory(
        job__image__case=case,
        probabilities={"normal": 0.1, "pneumonia": 0.7, "covid": 0.15, "tuberculosis": 0.05},
        top_label="pneumonia",
        top_probability=0.7,
        model_name="xray-tiny",
        model_version="1.0.0",
    )
    job = prediction.job
    image = job.image
    response = rad_client.get(reverse("case_detail", args=[case.pk]))
    assert response.status_code == 200
    assertContains(response, f'id="image-{image.pk}"')
    # The viewer (static/js/viewer.js) opens the image file in its viewport.
    assertContains(response, f'data-image-url="{reverse("image_file", args=[image.pk])}"', count=1)
    assertContains(response, '<span class="badge badge-succeeded job-status">succeeded</span>', html=True)
    assertContains(response, '<strong class="top-label">Pneumonia</strong>', html=True)
    assertContains(response, '<span class="model-version">1.0.0</span>', html=True)
    assertContains(response, '<span class="model-name">xray-tiny</span>', html=True)
    # Bars in probability order, with display names and percentages.
    text = error_text(response)
    assert re.search(r"Pneumonia 70\.0 %.*COVID-19 15\.0 %.*Normal 10\.0 %.*Tuberculosis 5\.0 %", text)
    assertContains(response, 'style="width: 70.0%"')
    assertContains(response, 'data-finished="true"')


def test_case_page_shows_timings(rad_client, case):
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    PredictionFactory(
        job__image__case=case,
        job__created_at=now - timedelta(seconds=5),
        job__started_at=now - timedelta(seconds=2),
        job__finished_at=now - timedelta(milliseconds=500),
    )
    text = error_text(rad_client.get(reverse("case_detail", args=[case.pk])))
    assert "Queue wait 3.0 s" in text
    assert "Run time 1.5 s" in text


def test_case_page_shows_failure_reason(rad_client, case):
    InferenceJobFactory(image__case=case, status="failed", error_message="no model installed for CT")
    response = rad_client.get(reverse("case_detail", args=[case.pk]))
    assertContains(response, '<span class="badge badge-failed job-status">failed</span>', html=True)
    assertContains(response, "no model installed for CT")
    assertNotContains(response, "top-label")


def test_case_page_polls_while_jobs_run(rad_client, case):
    InferenceJobFactory(image__case=case, status="running", attempt=1)
    response = rad_client.get(reverse("case_detail", args=[case.pk]))
    assertContains(response, 'data-finished="false"')
    assertContains(response, f'data-status-url="{reverse("case_status", args=[case.pk])}"')
    assertContains(response, "js/case.js")
    assertContains(response, '<span class="badge badge-running job-status">running</span>', html=True)


def test_case_page_shows_latest_job_of_an_image(rad_client, case):
    image = ImageFactory(case=case)
    InferenceJobFactory(image=image, status="failed", error_message="worker died")
    PredictionFactory(job__image=image, top_label="covid")
    response = rad_client.get(reverse("case_detail", args=[case.pk]))
    assertContains(response, '<strong class="top-label">COVID-19</strong>', html=True)
    assertNotContains(response, "worker died")
    assertContains(response, "1 earlier job for this image.")


def test_case_page_of_unknown_case_is_404(rad_client):
    assert rad_client.get(reverse("case_detail", args=[999999])).status_code == 404


def test_upload_then_worker_failure_shows_reason(rad_client, radiologist, patient, settings, tmp_path):
    """The real path without a broker: upload through the page, run the job as the worker
    would, and read the outcome on the page."""
    settings.XNET_MODEL_DIR = tmp_path / "no-models"
    response = rad_client.post(reverse("case_create"), create_form(modality="ct"))
    case = Case.objects.get()
    services.job_run(job_id=InferenceJob.objects.get(image__case=case).pk)
    page = rad_client.get(response["Location"])
    assertContains(page, '<span class="badge badge-failed job-status">failed</span>', html=True)
    assertContains(page, "model test-ct 1.0.0 is not installed")


# Status JSON -----------------------------------------------------------------------------


def test_case_status_json_follows_the_job(rad_client, case):
    job = InferenceJobFactory(image__case=case)
    url = reverse("case_status", args=[case.pk])

    data = rad_client.get(url).json()
    assert data["case"] == case.pk
    assert data["finished"] is False
    [image] = data["images"]
    assert image["id"] == job.image_id
    assert image["job"]["status"] == "pending"
    assert 'class="badge badge-pending job-status"' in image["html"]
    assert "signoff_html" not in data  # the sign-off block waits for the AI result

    services.job_claim(job_id=job.pk)
    data = rad_client.get(url).json()
    assert data["finished"] is False
    assert data["images"][0]["job"]["status"] == "running"

    services.job_succeed(
        job_id=job.pk,
        attempt=1,
        model_name="xray-tiny",
        model_version="2.1.0",
        probabilities={"normal": 0.2, "covid": 0.8},
    )
    response = rad_client.get(url)
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    data = response.json()
    assert data["finished"] is True
    job_data = data["images"][0]["job"]
    assert (job_data["status"], job_data["top_label"], job_data["top_label_display"]) == (
        "succeeded",
        "covid",
        "COVID-19",
    )
    assert job_data["top_probability"] == pytest.approx(0.8)
    assert (job_data["model_name"], job_data["model_version"]) == ("xray-tiny", "2.1.0")
    assert job_data["run_time_s"] >= 0
    assert '<strong class="top-label">COVID-19</strong>' in data["images"][0]["html"]
    # The page swaps in a sign-off block that now offers to agree with the finding.
    assert f'action="{reverse("report_sign", args=[case.pk])}"' in data["signoff_html"]
    assert "COVID-19" in data["signoff_html"]
    assert "No AI result to agree with" not in data["signoff_html"]


def test_case_status_with_failed_job(rad_client, case):
    InferenceJobFactory(image__case=case, status="failed", error_message="no model installed for CT")
    data = rad_client.get(reverse("case_status", args=[case.pk])).json()
    assert data["finished"] is True
    assert data["images"][0]["job"]["error_message"] == "no model installed for CT"


def test_case_status_of_case_without_images_is_finished(rad_client, case):
    data = rad_client.get(reverse("case_status", args=[case.pk])).json()
    assert (data["case"], data["finished"], data["images"]) == (case.pk, True, [])
    assert "No AI result to agree with:" in data["signoff_html"]


# Image files -----------------------------------------------------------------------------


def test_image_file_streams_the_upload(rad_client, case, chest_xray_bytes):
    rad_client.post(reverse("case_upload", args=[case.pk]), {"images": [upload(chest_xray_bytes, "c.jpg")]})
    image = case.images.get()
    response = rad_client.get(reverse("image_file", args=[image.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert response["Cache-Control"] == "private, no-store"
    assert b"".join(response.streaming_content) == chest_xray_bytes


def test_image_file_missing_on_disk_is_404(rad_client, case):
    image = ImageFactory(case=case)
    image.file.delete(save=False)
    assert rad_client.get(reverse("image_file", args=[image.pk])).status_code == 404


def test_image_file_requires_login(client, case):
    image = ImageFactory(case=case)
    response = client.get(reverse("image_file", args=[image.pk]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
