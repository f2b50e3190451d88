"""POST /api/v1/cases/<id>/images/: an external app uploads an image and gets a job to poll."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from diagnosis.models import Image, InferenceJob
from tests.conftest import media_files
from tests.factories import CaseFactory, PatientFactory, png_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def case(radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    return CaseFactory(patient=patient, created_by=radiologist)


def _upload_url(case) -> str:
    return f"/api/v1/cases/{case.pk}/images/"


def _post(api, case, data: bytes, name: str = "chest.png"):
    return api.post(_upload_url(case), {"file": SimpleUploadedFile(name, data)}, format="multipart")


def _gif_bytes() -> bytes:
    buffer = io.BytesIO()
    PILImage.linear_gradient("L").resize((128, 128)).save(buffer, format="GIF")
    return buffer.getvalue()


def _assert_nothing_written(media_root) -> None:
    assert not Image.objects.exists()
    assert not InferenceJob.objects.exists()
    assert media_files(media_root) == []


def test_upload_answers_202_with_job_location(
    api, case, chest_xray_bytes, settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = _post(api, case, chest_xray_bytes, name="Doe_John_chest.jpg")

    assert response.status_code == 202, response.content
    body = response.json()
    job = InferenceJob.objects.get()
    image = Image.objects.get()
    assert job.image == image
    assert image.case == case
    assert body["job"]["id"] == job.pk
    assert body["job"]["status"] == "pending"
    assert body["job"]["prediction"] is None
    assert body["job"]["url"] == f"http://testserver/api/v1/jobs/{job.pk}/"
    assert response["Location"] == body["job"]["url"]
    # A plain str: wsgiref (runserver) rejects str subclasses such as DRF's Hyperlink with a 500.
    assert type(response["Location"]) is str
    assert body["image"]["id"] == image.pk
    assert body["image"]["file"] == f"http://testserver/api/v1/images/{image.pk}/file/"
    assert (body["image"]["width"], body["image"]["height"], body["image"]["format"]) == (224, 224, "JPEG")
    assert body["image"]["original_name"] == "Doe_John_chest.jpg"
    # Stored under a random name (the original may identify the patient), bytes intact.
    assert "Doe" not in image.file.name
    assert media_files(settings.MEDIA_ROOT) == [settings.MEDIA_ROOT / image.file.name]
    with image.file.open("rb") as handle:
        assert handle.read() == chest_xray_bytes
    # The job is published only after commit (not run here: no broker in unit tests).
    assert len(callbacks) == 1
    assert job.queued_at is None


def test_missing_file_field(api, case, settings):
    response = api.post(_upload_url(case), {"confirm_modality": "false"}, format="multipart")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "required"
    assert error["fields"] == {"file": ["No file was submitted."]}
    _assert_nothing_written(settings.MEDIA_ROOT)


def test_unknown_field_is_named_beside_the_missing_file(api, case, settings):
    response = api.post(_upload_url(case), {"image": "chest.png"}, format="multipart")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"  # two problems
    assert error["fields"] == {
        "file": ["No file was submitted."],
        "image": ["Unknown field; this endpoint accepts file, frame, confirm_modality."],
    }
    _assert_nothing_written(settings.MEDIA_ROOT)


def test_json_body_is_unsupported_media_type(api, case, settings):
    response = api.post(_upload_url(case), {"file": "aGVsbG8="}, format="json")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    _assert_nothing_written(settings.MEDIA_ROOT)


@pytest.mark.parametrize(
    ("data", "name", "code", "phrase"),
    [
        (b"patient notes, not pixels\n" * 20, "notes.png", "not_an_image", "not an image"),
        (_gif_bytes(), "chest.gif", "unsupported_format", "Unsupported image format GIF"),
        (png_bytes(256, 256)[:400], "chest.png", "corrupt", "truncated or corrupt"),
        (b"", "empty.png", "empty", "0 bytes"),
        (png_bytes(32, 32), "tiny.png", "too_small", "only 32x32 pixels"),
    ],
    ids=["text-named-png", "gif", "truncated-png", "zero-bytes", "too-small"],
)
def test_bad_file_is_400_and_leaves_nothing(api, case, settings, data, name, code, phrase):
    response = _post(api, case, data, name=name)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["status"] == 400
    assert error["code"] == code
    assert list(error["fields"]) == ["file"]
    assert phrase in error["fields"]["file"][0]
    assert phrase in error["message"]
    _assert_nothing_written(settings.MEDIA_ROOT)


def test_file_above_size_limit(api, case, settings, chest_xray_bytes):
    settings.XNET_MAX_UPLOAD_BYTES = 1024
    response = _post(api, case, chest_xray_bytes, name="chest.jpg")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "too_large"
    assert "upload limit" in error["fields"]["file"][0]
    _assert_nothing_written(settings.MEDIA_ROOT)


def test_decompression_bomb(api, case, settings):
    settings.XNET_MAX_IMAGE_PIXELS = 100 * 100
    response = _post(api, case, png_bytes(128, 128))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "too_many_pixels"
    assert "128x128 pixels" in error["fields"]["file"][0]
    _assert_nothing_written(settings.MEDIA_ROOT)


def test_unknown_case_is_404(api, settings, chest_xray_bytes):
    response = api.post("/api/v1/cases/999999/images/", {"file": SimpleUploadedFile("c.jpg", chest_xray_bytes)})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    _assert_nothing_written(settings.MEDIA_ROOT)


def test_image_metadata_and_file(api, case, chest_xray_bytes):
    upload = _post(api, case, chest_xray_bytes, name="chest.jpg").json()

    metadata = api.get(upload["image"]["url"])
    assert metadata.status_code == 200
    body = metadata.json()
    assert body["case"] == case.pk
    assert body["size_bytes"] == len(chest_xray_bytes)
    assert [job["id"] for job in body["jobs"]] == [upload["job"]["id"]]

    response = api.get(body["file"])
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert response["Cache-Control"] == "private, no-store"
    assert b"".join(response.streaming_content) == chest_xray_bytes


def test_image_file_ignores_accept_header(api, case):
    upload = _post(api, case, png_bytes(), name="chest.png").json()
    response = api.get(upload["image"]["file"], HTTP_ACCEPT="image/png")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content) == png_bytes()
