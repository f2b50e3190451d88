"""Training runs end to end on a tiny real subset and writes a model folder the worker uses."""

import json
import logging
import shutil
import zipfile

import h5py
import numpy as np
import pytest

from diagnosis.models import InferenceJob
from ml.registry import ModelSpec, model_for
from tests.conftest import RESOURCES, SHARED_DATA, kaggle_subset
from training import evaluate, train
from training.data import discover


def test_folder_layout_classes_come_from_data(tmp_path, caplog):
    root = kaggle_subset(tmp_path / "kaggle", per_class=1)
    with caplog.at_level(logging.WARNING):
        dataset = discover(root, "xray")
    assert dataset.classes == ["normal", "pneumonia", "covid", "tuberculosis"]
    assert "empty_class" in caplog.text
    shutil.rmtree(root / "train" / "TUBERCULOSIS")
    assert discover(root, "xray").classes == ["normal", "pneumonia", "covid"]


def test_manifest_discovery_reads_ct():
    dataset = discover(SHARED_DATA, "ct")
    assert dataset.classes == ["covid", "non_covid"]
    counts = dataset.counts()
    assert counts["test"]["per_class"] == {"covid": 52, "non_covid": 64}
    assert {s.source for s in dataset.samples} == {"ucsd_covid_ct"}


@pytest.mark.django_db
def test_train_writes_model_folder_the_worker_uses(tmp_path, classify_now, settings):
    data = kaggle_subset(tmp_path / "kaggle")
    out = tmp_path / "models" / "xray-tiny-trained"
    train.main(
        ["xray", "--data", str(data), "--arch", "compact", "--size", "32", "--epochs", "1",
         "--batch-size", "4", "--bootstrap", "20", "--version", "0.0.1", "--balance-within-source",
         "--out", str(out)]
    )  # fmt: skip
    for name in ("model.keras", "model.json", "CARD.md", "confusion_matrix.png", "roc_curves.png",
                 "reliability_diagram.png"):  # fmt: skip
        assert (out / name).is_file(), name
    meta = json.loads((out / "model.json").read_text())
    assert meta["classes"] == ["normal", "pneumonia", "covid", "tuberculosis"]
    assert meta["training"]["counts"]["train"]["per_class"]["tuberculosis"] == 3
    assert meta["calibration"]["temperature"] > 0
    assert meta["starting_point"] == "trained from scratch (no pretrained weights)"
    assert meta["training"]["loss_weights"] == "classes balanced overall and within each source"
    assert set(meta["metrics"]["test"]["per_class"]) == set(meta["classes"])
    assert "source prior" in meta["metrics"]["baselines"]
    with zipfile.ZipFile(out / "model.keras") as saved, saved.open("model.weights.h5") as weights:
        assert "optimizer" not in h5py.File(weights, "r")  # the inference file only
    spec = ModelSpec.from_folder(out)
    assert spec.preprocessing.width == 32

    # Re-evaluating the folder (training.evaluate) reproduces the figures and keeps the baselines.
    (out / "CARD.md").unlink()
    again = evaluate.evaluate_folder(out, data, n_bootstrap=20)
    for key in ("accuracy", "balanced_accuracy"):
        assert again["test"][key] == meta["metrics"]["test"][key]
    sensitivities = {label: c["sensitivity"] for label, c in again["test"]["per_class"].items()}
    assert sensitivities == {label: c["sensitivity"] for label, c in meta["metrics"]["test"]["per_class"].items()}
    assert again["baselines"] == meta["metrics"]["baselines"]
    assert (out / "CARD.md").is_file()

    settings.XNET_MODEL_DIR = out.parent
    assert model_for("xray", out.parent) == spec
    job = classify_now((RESOURCES / "kermany_pneumonia_1.jpg").read_bytes())
    assert job.status == InferenceJob.Status.SUCCEEDED, job.error_message
    assert job.model_version == "0.0.1"
    assert len(job.prediction.probabilities) == 4


def test_within_source_weights_stop_the_source_standing_in_for_the_label():
    # Hospital A: 40 normals, 40 pneumonias. Hospital B: its own 4 tuberculosis and 4 normal films.
    labels = np.array([0] * 40 + [1] * 40 + [2] * 4 + [0] * 4)
    sources = ["A"] * 80 + ["B"] * 8
    in_b = np.array(sources) == "B"

    plain = train.sample_weights(labels, sources, 3, within_source=False)
    tb_b, normal_b = plain[in_b & (labels == 2)].sum(), plain[in_b & (labels == 0)].sum()
    assert tb_b > 5 * normal_b  # class weights alone: "hospital B" pays off as a tuberculosis cue

    balanced = train.sample_weights(labels, sources, 3, within_source=True)
    assert balanced[in_b & (labels == 2)].sum() == pytest.approx(balanced[in_b & (labels == 0)].sum())
    assert balanced[~in_b & (labels == 0)].sum() == pytest.approx(balanced[~in_b & (labels == 1)].sum())
    assert balanced.mean() == pytest.approx(1.0)


def test_initialise_from_copies_every_layer_but_the_classifier(tmp_path):
    from training.architectures import build_model

    source = build_model("compact", n_classes=4, input_size=32)
    (tmp_path / "xray").mkdir()
    source.save(tmp_path / "xray" / "model.keras")
    target = build_model("compact", n_classes=2, input_size=32)

    copied = train.initialise_from(target, tmp_path / "xray")

    pairs = list(zip([layer for layer in source.layers if layer.weights],
                     [layer for layer in target.layers if layer.weights], strict=True))  # fmt: skip
    assert copied == len(pairs) - 1
    for src, dst in pairs[:-1]:
        for a, b in zip(src.get_weights(), dst.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    assert target.layers[-1].get_weights()[0].shape[-1] == 2

    other = build_model("mobilenetv3small", n_classes=2, input_size=32)
    with pytest.raises(ValueError, match="different architecture"):
        train.initialise_from(other, tmp_path / "xray")


@pytest.mark.parametrize("arch", ["compact", "mobilenetv3small"])
def test_batch_norm_momentum_reaches_nested_backbones(arch):
    from training.architectures import build_model, set_batch_norm_momentum

    model = build_model(arch, n_classes=2, input_size=32)
    changed = set_batch_norm_momentum(model, 0.9)
    assert changed >= 8
    config = json.dumps(model.get_config())
    assert config.count('"momentum": 0.9') == changed
    assert '"momentum": 0.99' not in config


@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")  # the mismatched file, on purpose
def test_local_backbone_weights_are_loaded_not_downloaded(tmp_path):
    # A hospital's ImageNet file stands in here for one saved from a backbone we build: the
    # backbone must come back with exactly those weights, and the classifier stays new.
    import keras

    from training.architectures import build_model

    donor = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3))
    weights_file = tmp_path / "mobilenet_v3_small_notop.weights.h5"
    donor.save_weights(weights_file)

    model = build_model("mobilenetv3small", n_classes=2, input_size=32, weights_path=weights_file)
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    for loaded, saved in zip(backbone.get_weights(), donor.get_weights(), strict=True):
        np.testing.assert_array_equal(loaded, saved)

    fresh = build_model("mobilenetv3small", n_classes=2, input_size=32)
    fresh_backbone = next(layer for layer in fresh.layers if isinstance(layer, keras.Model))
    assert any(not np.array_equal(a, b) for a, b in zip(fresh_backbone.get_weights(), donor.get_weights(), strict=True))

    other = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3))
    other.save_weights(tmp_path / "efficientnetb0_notop.weights.h5")
    with pytest.raises(ValueError, match="does not hold mobilenetv3small weights without the top"):
        build_model(
            "mobilenetv3small", n_classes=2, input_size=32, weights_path=tmp_path / "efficientnetb0_notop.weights.h5"
        )
