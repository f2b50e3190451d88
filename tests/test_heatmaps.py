"""Grad-CAM heatmaps: made in the worker for every prediction (batches too), stored privately,
served to the department only, drawn over the image on the case page with its controls."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image as PILImage
from pytest_django.asserts import assertContains

from diagnosis import services
from diagnosis.models import InferenceJob, Modality
from ml.heatmaps import colourise, heatmap_png
from tests.conftest import RESOURCES
from tests.factories import CaseFactory, PatientFactory, PredictionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def xray_case(radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    return CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)


def upload(case, user, name: str = "kermany_normal_1.jpg") -> InferenceJob:
    data = (RESOURCES / name).read_bytes()
    return services.image_upload(case=case, file=SimpleUploadedFile(name, data), uploaded_by=user)


@pytest.fixture
def predicted(radiologist, xray_case, installed_models) -> InferenceJob:
    job = upload(xray_case, radiologist)
    services.job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == InferenceJob.Status.SUCCEEDED, job.rejection_reason or job.error_message
    return job


def read_png(data: bytes) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(data))
    image.load()
    return image


def test_colourise_is_transparent_where_the_model_did_not_look():
    cam = np.zeros((8, 8), dtype=np.float32)
    cam[2:4, 2:4] = 1.0
    rgba = colourise(cam)
    assert rgba.shape == (8, 8, 4)
    assert rgba[0, 0, 3] == 0
    assert rgba[2, 2, 3] == 255
    assert tuple(rgba[2, 2, :3]) == (220, 40, 30)  # the hot end of the ramp
    assert read_png(heatmap_png(cam)).mode == "RGBA"


def _zlib_levels(png: bytes) -> set[int]:
    """FLEVEL of each IDAT zlib stream header: 0 is zlib's fastest setting, 2 its default."""
    levels, offset = set(), 8
    while offset < len(png):
        length = int.from_bytes(png[offset : offset + 4], "big")
        if png[offset + 4 : offset + 8] == b"IDAT" and not levels:
            levels.add(png[offset + 9] >> 6)  # the second byte of the zlib stream
        offset += 12 + length
    return levels


def test_heatmap_png_is_lossless_and_written_for_speed():
    """The worker writes one per prediction: zlib's fastest level, no `optimize` pass (at 224 px
    58 ms with optimize, 4 ms at level 1; the file is a quarter larger)."""
    rng = np.random.default_rng(0)
    cam = np.clip(rng.normal(0.5, 0.3, (224, 224)), 0, 1).astype(np.float32)
    png = heatmap_png(cam)
    np.testing.assert_array_equal(np.asarray(read_png(png)), colourise(cam))
    assert _zlib_levels(png) == {0}


def test_worker_stores_a_heatmap_png_the_size_of_the_model_input(predicted, settings):
    prediction = predicted.prediction
    assert prediction.heatmap.name.startswith("heatmaps/")
    path = settings.MEDIA_ROOT / prediction.heatmap.name
    assert path.is_file()
    image = read_png(path.read_bytes())
    assert image.format == "PNG"
    assert image.size == (64, 64)  # the tiny model's input
    alpha = np.asarray(image)[:, :, 3]
    assert alpha.max() > 200  # the strongest region is drawn
    assert alpha.min() < alpha.max()  # and it is a map, not a flat tint


def test_every_job_of_a_batch_gets_its_own_heatmap(radiologist, xray_case, installed_models):
    jobs = [upload(xray_case, radiologist, name) for name in ("kermany_normal_1.jpg", "kermany_pneumonia_1.jpg")]
    services.job_run(job_id=jobs[0].pk)  # one task runs both
    names = set()
    for job in jobs:
        job.refresh_from_db()
        assert job.status == InferenceJob.Status.SUCCEEDED
        assert job.prediction.heatmap
        names.add(job.prediction.heatmap.name)
    assert len(names) == 2


def test_heatmap_page_view_serves_the_department_only(rad_client, client, outsider, predicted):
    url = reverse("prediction_heatmap", args=[predicted.prediction.pk])
    response = rad_client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Cache-Control"] == "private, no-store"  # same as the API: patient data
    assert read_png(b"".join(response.streaming_content)).size == (64, 64)

    client.force_login(outsider)
    assert client.get(url).status_code == 404


def test_heatmap_page_view_requires_login(client, predicted):
    response = client.get(reverse("prediction_heatmap", args=[predicted.prediction.pk]))
    assert response.status_code == 302


def test_prediction_without_heatmap_is_404(rad_client, api, radiologist):
    prediction = PredictionFactory(
        job__image__case__patient__department=radiologist.department,
        job__image__case__patient__created_by=radiologist,
    )
    assert rad_client.get(reverse("prediction_heatmap", args=[prediction.pk])).status_code == 404
    assert api.get(reverse("api:prediction-heatmap", args=[prediction.pk])).status_code == 404
    assert api.get(reverse("api:prediction-detail", args=[prediction.pk])).json()["heatmap_url"] is None


def test_heatmap_file_gone_from_disk_is_404_on_page_and_api(rad_client, api, predicted):
    prediction = predicted.prediction
    prediction.heatmap.storage.delete(prediction.heatmap.name)
    assert rad_client.get(reverse("prediction_heatmap", args=[prediction.pk])).status_code == 404
    response = api.get(reverse("api:prediction-heatmap", args=[prediction.pk]))
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "The stored heatmap of this prediction is missing."


def test_api_returns_the_heatmap_url_and_serves_it_to_the_department_only(api, outsider_api, predicted):
    prediction = predicted.prediction
    job_body = api.get(reverse("api:job-detail", args=[predicted.pk])).json()
    expected = "http://testserver" + reverse("api:prediction-heatmap", args=[prediction.pk])
    assert job_body["prediction"]["heatmap_url"] == expected
    assert job_body["rejection_code"] is None  # null when the gate passed (one enum, no empty string)
    assert api.get(reverse("api:prediction-detail", args=[prediction.pk])).json()["heatmap_url"] == expected

    response = api.get(expected)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert read_png(b"".join(response.streaming_content)).format == "PNG"

    refused = outsider_api.get(expected)
    assert refused.status_code == 404
    assert refused.json()["error"]["status"] == 404


def test_case_page_draws_the_heatmap_over_the_image_with_controls(rad_client, xray_case, predicted):
    page = rad_client.get(reverse("case_detail", args=[xray_case.pk]))
    heatmap_url = reverse("prediction_heatmap", args=[predicted.prediction.pk])
    image_url = reverse("image_file", args=[predicted.image_id])
    assertContains(page, f'<img class="heatmap-base" src="{image_url}"')
    assertContains(page, f'<img class="heatmap-overlay" src="{heatmap_url}" style="opacity: 0.5"')
    assertContains(page, '<input type="checkbox" class="heatmap-toggle" checked>')
    assertContains(page, 'type="range" class="heatmap-opacity" min="0" max="100"')

    status = rad_client.get(reverse("case_status", args=[xray_case.pk])).json()
    image = status["images"][0]
    assert image["job"]["heatmap_url"] == heatmap_url
    assert "heatmap-opacity" in image["html"]  # the polled block carries the controls too
