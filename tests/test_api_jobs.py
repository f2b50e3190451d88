"""/api/v1/jobs/<id>/ and /api/v1/predictions/<id>/: polling an upload to its result.

The job is driven in-process through services.job_run with real (tiny) Keras models; running it
through a Celery worker is covered by the integration tests.
"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from diagnosis import services
from tests.factories import CaseFactory, PatientFactory

pytestmark = pytest.mark.django_db

JOB_FIELDS = {
    "id",
    "url",
    "image",
    "case",
    "status",
    "attempt",
    "model_name",
    "model_version",
    "model_card_url",
    "model_status",
    "error_message",
    "rejection_code",
    "rejection_reason",
    "gate_scores",
    "created_at",
    "queued_at",
    "started_at",
    "finished_at",
    "prediction",
}
PREDICTION_FIELDS = {
    "id",
    "probabilities",
    "top_label",
    "top_probability",
    "model_name",
    "model_version",
    "model_card_url",
    "heatmap_url",
    "created_at",
}


def _upload(api, radiologist, image_bytes, *, modality="xray"):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    case = CaseFactory(patient=patient, created_by=radiologist, modality=modality)
    response = api.post(f"/api/v1/cases/{case.pk}/images/", {"file": SimpleUploadedFile("c.jpg", image_bytes)})
    assert response.status_code == 202, response.content
    return case, response


def test_pending_job(api, radiologist, chest_xray_bytes):
    case, upload = _upload(api, radiologist, chest_xray_bytes)
    response = api.get(upload["Location"])
    assert response.status_code == 200
    body = response.json()
    assert set(body) == JOB_FIELDS
    assert body == upload.json()["job"]
    assert (body["status"], body["attempt"], body["prediction"]) == ("pending", 0, None)
    # The job names its model from creation (issue 12: one job per model active here)
    assert body["model_card_url"] == "http://testserver/models/test-xray/1.0.0/"
    assert (body["image"], body["case"]) == (upload.json()["image"]["id"], case.pk)
    assert body["started_at"] is None
    assert body["finished_at"] is None


def test_succeeded_job_shows_prediction(api, radiologist, chest_xray_bytes, installed_models):
    case, upload = _upload(api, radiologist, chest_xray_bytes)
    services.job_run(job_id=upload.json()["job"]["id"])

    job = api.get(upload["Location"]).json()
    assert job["status"] == "succeeded"
    assert (job["attempt"], job["model_name"], job["model_version"]) == (1, "xray-tiny", "1.0.0")
    assert job["started_at"] <= job["finished_at"]
    prediction = job["prediction"]
    assert set(prediction) == PREDICTION_FIELDS
    card_url = "http://testserver/models/xray-tiny/1.0.0/"
    assert job["model_card_url"] == prediction["model_card_url"] == card_url
    card = api.get(card_url)  # token authentication does not open pages: the card is a web page
    assert card.status_code == 302
    assert set(prediction["probabilities"]) == {"normal", "pneumonia", "covid", "tuberculosis"}
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction["top_probability"] == max(prediction["probabilities"].values())
    assert prediction["probabilities"][prediction["top_label"]] == prediction["top_probability"]

    detail = api.get(f"/api/v1/predictions/{prediction['id']}/")
    assert detail.status_code == 200
    body = detail.json()
    assert (body["job"], body["image"], body["case"]) == (job["id"], job["image"], case.pk)
    assert body["url"] == f"http://testserver/api/v1/predictions/{prediction['id']}/"
    assert body["probabilities"] == prediction["probabilities"]

    summary = api.get(f"/api/v1/cases/{case.pk}/").json()
    assert (summary["status"], summary["top_label"]) == ("succeeded", prediction["top_label"])
    assert summary["images"][0]["jobs"][0]["prediction"] == prediction


def test_failed_job_has_message_and_no_prediction(api, radiologist, chest_xray_bytes, settings, tmp_path):
    settings.XNET_MODEL_DIR = tmp_path / "no-models"
    _, upload = _upload(api, radiologist, chest_xray_bytes, modality="ct")
    services.job_run(job_id=upload.json()["job"]["id"])
    job = api.get(upload["Location"]).json()
    # The department's CT deployment names a model whose folder is not installed.
    assert (job["status"], job["prediction"]) == ("failed", None)
    assert job["error_message"] == "model test-ct 1.0.0 is not installed"
    assert job["finished_at"] is not None


def test_unknown_job_and_prediction_are_404(api):
    for url in ["/api/v1/jobs/31337/", "/api/v1/predictions/31337/"]:
        response = api.get(url)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
