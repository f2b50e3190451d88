"""The models shipped in ml/models: what command 1 runs with, through the real worker path.

No accuracy is asserted here (the model cards hold the measured figures); these tests catch a
shipped folder that does not load, is too big to commit, lacks its card, or that the worker's
preprocessing, gate and heatmap code can no longer run.
"""

import csv
import json

import pytest
from django.conf import settings as django_settings

from diagnosis.models import InferenceJob, Modality
from ml.registry import installed_models, model_for
from tests.conftest import RESOURCES, SHARED_DATA

SHIPPED = django_settings.BASE_DIR / "ml" / "models"


def _ct_test_slice() -> bytes:
    with (SHARED_DATA / "manifest.csv").open() as f:
        row = next(r for r in csv.DictReader(f) if r["modality"] == "ct" and r["split"] == "test")
    return (SHARED_DATA / row["path"]).read_bytes()


def test_every_shipped_folder_is_complete_and_small_enough_to_commit():
    specs = installed_models(SHIPPED)
    assert {spec.modality for spec in specs} == {Modality.XRAY, Modality.CT}
    for spec in specs:
        assert spec.model_file.stat().st_size < 30 * 1024 * 1024, spec.label
        meta = json.loads((spec.folder / "model.json").read_text())
        assert meta["metrics"]["test"]["ci95"]["accuracy"], spec.label
        assert meta["limitations"], spec.label
        assert meta["intended_use"], spec.label
        for name in ("CARD.md", "confusion_matrix.png", "roc_curves.png", "reliability_diagram.png", "gate.npz"):
            assert (spec.folder / name).is_file(), f"{spec.label}: {name}"


def test_the_default_xray_model_has_the_four_classes_and_ct_two():
    assert list(model_for(Modality.XRAY, SHIPPED).classes) == ["normal", "pneumonia", "covid", "tuberculosis"]
    assert sorted(model_for(Modality.CT, SHIPPED).classes) == ["covid", "non_covid"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("modality", "image"),
    [(Modality.XRAY, lambda: (RESOURCES / "kermany_normal_1.jpg").read_bytes()), (Modality.CT, _ct_test_slice)],
)
def test_the_worker_classifies_a_real_image_with_the_newest_shipped_model(modality, image, classify_now, settings):
    settings.XNET_MODEL_DIR = SHIPPED
    newest = model_for(modality, SHIPPED)
    job = classify_now(image(), modality)
    assert job.status == InferenceJob.Status.SUCCEEDED, job.error_message
    assert (job.model_name, job.model_version) == (newest.name, newest.version)
    assert set(job.prediction.probabilities) == set(newest.classes)
    assert sum(job.prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert job.prediction.heatmap


@pytest.mark.parametrize("modality", [Modality.XRAY, Modality.CT])
def test_the_default_models_cards_lead_with_their_external_validation(modality):
    """What predicts a new hospital comes before the test split: a leave-one-source-out table, or the
    plain statement that the model has no external validation (one source only)."""
    newest = model_for(modality, SHIPPED)
    meta = json.loads((newest.folder / "model.json").read_text())
    card = (newest.folder / "CARD.md").read_text()
    if meta["external_validation"] == "leave one source out":
        assert set(meta["leave_one_source_out"]["folds"]) >= {"covid19rad224", "nitrd_da", "nih14", "ieee8023"}
        assert card.index("## Leave one source out") < card.index("## Test split")
        assert (newest.folder / "leave_one_source_out.png").is_file()
    else:
        assert meta["external_validation"] == "none"
        assert card.index("**This model has no external validation.**") < card.index("## Test split")
    assert meta["pretrained_source"]["licence"]
    assert meta["recommended_status"] == "silent"
