"""Stored files are patient data: every file the platform writes (uploads through the pages and
the API, the PNG rendered from a DICOM, the worker's heatmap) is 0600 and every folder it creates
0700, whatever the process's umask (Django's default is 0644 files in 0755 folders)."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image as PILImage

from diagnosis.models import Image, InferenceJob
from tests.dicom_files import make_dicom
from tests.dicom_files import upload as dicom_upload
from tests.factories import CaseFactory, PatientFactory, png_bytes

pytestmark = pytest.mark.django_db


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def _permissive_umask():
    """A process started with the common 022 umask: what Django's defaults turn into 0644/0755."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture
def case(radiologist):
    return CaseFactory(patient=PatientFactory(department=radiologist.department, created_by=radiologist))


def assert_private(file_path: Path, media_root: Path) -> None:
    assert mode(file_path) == 0o600, f"{file_path} is {oct(mode(file_path))}"
    folder = file_path.parent
    while folder != media_root:
        assert mode(folder) == 0o700, f"{folder} is {oct(mode(folder))}"
        folder = folder.parent


def test_page_upload_is_private(rad_client, case, settings):
    url = reverse("case_upload", args=[case.pk])
    assert rad_client.post(url, {"images": [SimpleUploadedFile("c.png", png_bytes())]}).status_code == 302
    image = Image.objects.get(case=case)
    assert_private(Path(image.file.path), Path(settings.MEDIA_ROOT))


def test_api_dicom_upload_and_its_rendering_are_private(api, case, settings):
    case.patient.mrn, case.patient.name = "PAT-0001", "Jane Doe"
    case.patient.save(update_fields=["mrn", "name"])
    data = make_dicom(patient_id="PAT-0001", patient_name="Doe^Jane")
    response = api.post(f"/api/v1/cases/{case.pk}/images/", {"file": dicom_upload(data)}, format="multipart")
    assert response.status_code == 202, response.content
    image = Image.objects.get(case=case)
    assert image.rendered
    for stored in (image.file, image.rendered):
        assert_private(Path(stored.path), Path(settings.MEDIA_ROOT))


def test_a_large_upload_written_through_a_temporary_file_is_private(rad_client, case, settings):
    """Above FILE_UPLOAD_MAX_MEMORY_SIZE an upload is moved from a temporary file, not copied."""
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
    noise = np.random.default_rng(7).integers(0, 256, (256, 256), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(noise, mode="L").save(buffer, format="PNG")
    data = buffer.getvalue()
    assert len(data) > settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    url = reverse("case_upload", args=[case.pk])
    assert rad_client.post(url, {"images": [SimpleUploadedFile("c.png", data)]}).status_code == 302
    assert_private(Path(Image.objects.get(case=case).file.path), Path(settings.MEDIA_ROOT))


def test_the_workers_heatmap_is_private(classify_now, installed_models, settings):
    job = classify_now(png_bytes())
    assert job.status == InferenceJob.Status.SUCCEEDED, job.error_message
    heatmap = Path(job.prediction.heatmap.path)
    assert heatmap.exists()
    assert_private(heatmap, Path(settings.MEDIA_ROOT))
