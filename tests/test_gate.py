"""The input gate: each refusal on images the tests build, the calibrated distance check, and
what a refused job looks like on the case page and in the API."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image as PILImage
from PIL import ImageDraw
from pydicom.data import get_testdata_file
from pytest_django.asserts import assertContains, assertNotContains

from diagnosis import services
from diagnosis.models import InferenceJob, Modality, Prediction
from ml import gate
from ml.registry import ModelSpec
from tests.conftest import RESOURCES, kaggle_subset
from tests.factories import CaseFactory, PatientFactory, speaking_models
from training import gate as gate_cli

pytestmark = pytest.mark.django_db


# Images the tests build ----------------------------------------------------------------------


def encode(image: PILImage.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def colour_photo(size: int = 256) -> PILImage.Image:
    """Blue sky over green grass with a red ball: a colour picture any phone could take."""
    array = np.zeros((size, size, 3), dtype=np.uint8)
    array[: size // 2] = (90, 150, 230)
    array[size // 2 :] = (60, 160, 50)
    image = PILImage.fromarray(array, "RGB")
    ImageDraw.Draw(image).ellipse((size // 3, size // 3, size // 2, size // 2), fill=(220, 30, 30))
    return image


def document(size: int = 300) -> PILImage.Image:
    image = PILImage.new("L", (size, int(size * 1.3)), 255)
    draw = ImageDraw.Draw(image)
    for row, y in enumerate(range(20, image.height - 20, 16)):
        draw.text((20, y), f"Discharge letter, line {row}: patient stable, follow up in two weeks.", fill=0)
    return image


def checkerboard(size: int = 256) -> PILImage.Image:
    """A test pattern: greyscale with plenty of grey levels (passes the pixel checks) yet nothing
    like a chest film, so only the feature distance can refuse it."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    array = ((xx // 8 + yy // 8) % 2) * 200 + rng.integers(0, 50, (size, size))
    return PILImage.fromarray(array.astype(np.uint8), "L")


def chest_xray() -> PILImage.Image:
    return PILImage.open(RESOURCES / "kermany_normal_1.jpg")


@pytest.fixture
def xray_spec(installed_models) -> ModelSpec:
    return ModelSpec.from_folder(installed_models / "xray-tiny")


# The checks, one by one ----------------------------------------------------------------------


def test_chest_xray_passes_every_pixel_check(xray_spec):
    verdict = gate.check_image(xray_spec, chest_xray(), dicom={"modality": "CR", "view_position": "PA"})
    assert verdict.accepted, verdict.reason
    assert verdict.scores["colour_fraction"] < 0.01
    assert verdict.scores["grey_levels"] >= gate.GREY_LEVELS_MIN


def test_colour_photo_is_not_medical(xray_spec):
    verdict = gate.check_image(xray_spec, colour_photo())
    assert verdict.code == gate.NOT_MEDICAL
    assert "colour picture" in verdict.reason
    assert verdict.scores["colour_fraction"] > 0.9


def test_greyscale_copy_of_the_photo_is_not_refused_for_colour(xray_spec):
    # The colour measure is what refused the photo: without colour its flat regions use too few grey levels.
    verdict = gate.check_image(xray_spec, colour_photo().convert("L"))
    assert verdict.scores["colour_fraction"] == 0.0
    assert "colour" not in verdict.reason


def test_document_is_not_medical(xray_spec):
    verdict = gate.check_image(xray_spec, document())
    assert verdict.code == gate.NOT_MEDICAL
    assert "document or a screen" in verdict.reason
    assert verdict.scores["white_fraction"] > gate.WHITE_FRACTION_MAX
    assert verdict.scores["mid_fraction"] < gate.MID_FRACTION_MIN


def test_flat_screenshot_uses_too_few_grey_levels(xray_spec):
    screen = PILImage.new("L", (400, 300), 200)
    draw = ImageDraw.Draw(screen)
    draw.rectangle((0, 0, 400, 30), fill=60)
    draw.rectangle((0, 30, 120, 300), fill=150)
    draw.text((140, 60), "Worklist  Patients  Settings", fill=20)
    verdict = gate.check_image(xray_spec, screen)
    assert verdict.code == gate.NOT_MEDICAL
    assert "screenshot" in verdict.reason
    assert verdict.scores["grey_levels"] < gate.GREY_LEVELS_MIN


def test_lateral_view_from_the_dicom_header(xray_spec):
    verdict = gate.check_image(xray_spec, chest_xray(), dicom={"modality": "DX", "view_position": "LL"})
    assert verdict.code == gate.LATERAL_VIEW
    assert "lateral view (LL)" in verdict.reason


def test_lateral_tag_does_not_matter_to_a_ct_model(installed_models):
    ct_spec = ModelSpec.from_folder(installed_models / "ct-tiny")
    verdict = gate.check_image(ct_spec, chest_xray(), dicom={"modality": "CT", "view_position": "LATERAL"})
    assert verdict.accepted, verdict.reason


@pytest.mark.parametrize(
    ("tag", "folder", "expected"),
    [("CT", "xray-tiny", "X-ray"), ("CR", "ct-tiny", "CT"), ("MR", "xray-tiny", "X-ray")],
)
def test_wrong_modality_from_the_dicom_header(installed_models, tag, folder, expected):
    spec = ModelSpec.from_folder(installed_models / folder)
    verdict = gate.check_image(spec, chest_xray(), dicom={"modality": tag})
    assert verdict.code == gate.WRONG_MODALITY
    assert f"modality is {tag}, but this model reads {expected} images" in verdict.reason


def test_too_small_for_the_model(xray_spec):
    assert gate.min_side(xray_spec) == 22  # a third of the 64-pixel input
    verdict = gate.check_image(xray_spec, chest_xray().resize((40, 20)))
    assert verdict.code == gate.TOO_SMALL
    assert "shorter side is 20 pixels" in verdict.reason
    assert gate.check_image(xray_spec, chest_xray().resize((40, 22))).accepted


def test_uncalibrated_model_skips_only_the_distance_check(xray_spec):
    assert gate.OodCalibration.load(xray_spec) is None
    verdict = gate.check_features(None, np.zeros(4))
    assert verdict.accepted
    assert verdict.scores == {"ood": "skipped: the model has no gate calibration"}


def test_feature_distance_grows_away_from_the_classes():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (50, 3)), rng.normal(5, 1, (50, 3))])
    stats = gate.FeatureStats.fit(features, np.array([0] * 50 + [1] * 50))
    near, between, far = stats.score(np.array([[0, 0, 0], [2.5, 2.5, 2.5], [20, -20, 20]]))
    assert near < between < far
    assert near < 1.0 < 10.0 < far


# Through the worker, the page and the API ------------------------------------------------------


@pytest.fixture
def xray_case(radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    return CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)


def run_job(case, radiologist, data: bytes, name: str = "upload.png", dicom: dict | None = None) -> InferenceJob:
    job = services.image_upload(case=case, file=SimpleUploadedFile(name, data), uploaded_by=radiologist)
    if dicom is not None:
        job.image.dicom = dicom  # as the DICOM intake records it
        job.image.save(update_fields=["dicom"])
    services.job_run(job_id=job.pk)
    job.refresh_from_db()
    return job


def assert_rejected(job: InferenceJob, code: str) -> None:
    assert job.status == InferenceJob.Status.REJECTED, (job.status, job.error_message)
    assert job.rejection_code == code
    assert job.rejection_reason
    assert job.gate_scores
    assert job.finished_at is not None
    assert not Prediction.objects.filter(job=job).exists()


def test_worker_rejects_a_colour_photo_and_page_and_api_say_why(
    rad_client, api, radiologist, xray_case, installed_models
):
    job = run_job(xray_case, radiologist, encode(colour_photo(), "JPEG"), "holiday.jpg")
    assert_rejected(job, InferenceJob.Rejection.NOT_MEDICAL)
    assert job.gate_scores["colour_fraction"] > 0.9

    page = rad_client.get(reverse("case_detail", args=[xray_case.pk]))
    assertContains(page, '<span class="badge badge-rejected job-status">rejected</span>', html=True)
    assertContains(page, "Not classified: Not a medical greyscale image")
    assertContains(page, "This looks like a colour picture, not a radiograph")
    assertNotContains(page, 'class="probabilities"')
    assertNotContains(page, "Top finding")

    status = rad_client.get(reverse("case_status", args=[xray_case.pk])).json()
    assert status["finished"] is True
    assert status["images"][0]["job"]["rejection_code"] == "not_medical"
    assert "colour picture" in status["images"][0]["html"]

    body = api.get(reverse("api:job-detail", args=[job.pk])).json()
    assert body["status"] == "rejected"
    assert body["rejection_code"] == "not_medical"
    assert body["rejection_reason"] == job.rejection_reason
    assert body["prediction"] is None


def test_worker_rejects_a_document(radiologist, xray_case, installed_models):
    job = run_job(xray_case, radiologist, encode(document()), "letter.png")
    assert_rejected(job, InferenceJob.Rejection.NOT_MEDICAL)


def test_worker_rejects_a_lateral_view(radiologist, xray_case, installed_models):
    job = run_job(xray_case, radiologist, encode(chest_xray()), dicom={"modality": "DX", "view_position": "LL"})
    assert_rejected(job, InferenceJob.Rejection.LATERAL_VIEW)
    assert job.gate_scores["view_position"] == "LL"


def test_worker_rejects_a_ct_sent_to_the_xray_model(radiologist, xray_case, installed_models):
    job = run_job(xray_case, radiologist, encode(chest_xray()), dicom={"modality": "CT"})
    assert_rejected(job, InferenceJob.Rejection.WRONG_MODALITY)


def test_worker_rejects_a_real_lateral_dicom(radiologist, xray_case, installed_models):
    """A real CR radiograph (pydicom's RG1_UNCR.dcm) whose header says lateral, through the DICOM intake."""
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm", download=False))
    ds.ViewPosition = "LL"
    ds.PatientID = xray_case.patient.mrn
    buffer = io.BytesIO()
    ds.save_as(buffer)
    job = run_job(xray_case, radiologist, buffer.getvalue(), "lateral.dcm")
    assert_rejected(job, InferenceJob.Rejection.LATERAL_VIEW)


def test_worker_rejects_an_image_too_small_for_the_model(radiologist, xray_case, model_dir, settings, tmp_path):
    folder = shutil.copytree(model_dir / "xray-tiny", tmp_path / "models" / "xray-tiny")
    meta = json.loads((folder / "model.json").read_text())
    meta["gate"] = {"min_side": 200}  # a model whose input needs at least 200 pixels
    (folder / "model.json").write_text(json.dumps(meta))
    settings.XNET_MODEL_DIR = folder.parent
    speaking_models(radiologist.department)  # this folder's model is the department's (issue 12)
    job = run_job(xray_case, radiologist, encode(chest_xray().resize((180, 150))))
    assert_rejected(job, InferenceJob.Rejection.TOO_SMALL)
    assert "shorter side is 150 pixels" in job.rejection_reason


def test_accepted_job_records_the_gate_scores(radiologist, xray_case, installed_models):
    job = run_job(xray_case, radiologist, encode(chest_xray()))
    assert job.status == InferenceJob.Status.SUCCEEDED, job.rejection_reason or job.error_message
    assert job.rejection_code == ""
    assert job.gate_scores["ood"] == "skipped: the model has no gate calibration"
    assert job.gate_scores["grey_levels"] >= gate.GREY_LEVELS_MIN


# A calibrated model: training.gate end to end on a tiny real subset -------------------------------


@pytest.fixture(scope="module")
def calibrated_dir(tmp_path_factory, model_dir) -> Path:
    root = tmp_path_factory.mktemp("calibrated")
    data = kaggle_subset(root / "kaggle", per_class=2)
    folder = shutil.copytree(model_dir / "xray-tiny", root / "models" / "xray-tiny")
    (folder / "CARD.md").write_text("# Model card: xray-tiny 1.0.0\n\n## Limitations\n- tests only\n")
    gate_cli.main(["xray", "--model", str(folder), "--data", str(data), "--nonchest-per-kind", "2"])
    return folder.parent


def test_gate_cli_writes_threshold_and_rates_into_the_model_folder(calibrated_dir):
    folder = calibrated_dir / "xray-tiny"
    meta = json.loads((folder / "model.json").read_text())
    section = meta["gate"]
    assert section["threshold"] > 0
    assert section["percentile"] == 99.0
    assert section["fitted_on"] == "training split (8 images)"
    assert section["test"]["n"] == 8
    assert 0 <= section["test"]["rate"] <= 0.5
    nonchest = section["nonchest"]
    assert nonchest["n"] >= 12
    assert nonchest["rate"] >= 0.5
    for kind in ("colour_photo", "document", "screenshot"):
        assert nonchest["by_kind"][kind]["rejected"] == nonchest["by_kind"][kind]["n"], kind
    assert nonchest["by_kind"]["dicom"]["n"] >= 1  # pydicom's MR_small.dcm at least
    with np.load(folder / gate.GATE_FILE) as stored:
        assert stored["means"].shape == (4, 4)  # four classes, four features in the tiny model
    card = (folder / "CARD.md").read_text()
    assert card.startswith("# Model card: xray-tiny 1.0.0")
    assert "## Limitations" in card
    assert f"**test split: {section['test']['rate'] * 100:.1f} % rejected**" in card
    assert f"**non-chest images: {nonchest['rate'] * 100:.1f} % rejected**" in card


def test_calibrated_gate_refuses_an_unlike_image_and_passes_a_chest_xray(
    radiologist, xray_case, calibrated_dir, settings
):
    settings.XNET_MODEL_DIR = calibrated_dir
    speaking_models(radiologist.department)  # the calibrated model is the department's (issue 12)
    # A chest film of the calibration data's own kind (the tiny model's 4 random features put a
    # pediatric Kermany film far from 8 adult films; what matters here is the distance check).
    val_normals = sorted((calibrated_dir.parent / "kaggle" / "val" / "NORMAL").iterdir())
    passed = run_job(xray_case, radiologist, val_normals[0].read_bytes(), "chest.png")
    assert passed.status == InferenceJob.Status.SUCCEEDED, passed.rejection_reason
    assert passed.gate_scores["ood_distance"] <= passed.gate_scores["ood_threshold"]

    refused = run_job(xray_case, radiologist, encode(checkerboard()), "pattern.png")
    assert_rejected(refused, InferenceJob.Rejection.OUT_OF_DISTRIBUTION)
    assert refused.gate_scores["ood_distance"] > refused.gate_scores["ood_threshold"]
    assert "unlike the images the model was trained on" in refused.rejection_reason
