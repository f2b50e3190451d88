"""Leave-one-source-out validation (training.crossval) and frozen-backbone shipping (training.frozen)
on a tiny manifest with three sources that the test draws itself. No accuracy is asserted: the
images are toys; the tests check which images each fold trains and scores on, the figures' form,
the heatmap arithmetic, and that the shipped folder is one the platform loads."""

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ml.preprocessing import Preprocessing
from training import crossval, frozen
from training.data import discover
from training.features import extract

SOURCES = {"alpha": ("normal", "covid"), "beta": ("normal", "covid", "pneumonia"), "gamma": ("normal", "tuberculosis")}
PER_SPLIT = {"train": 4, "val": 2, "test": 2}
SIZE = 64


def _picture(label: str, index: int, source: str) -> Image.Image:
    rng = np.random.default_rng([hash(label) % 1000, index, len(source)])
    base = {"alpha": 90, "beta": 120, "gamma": 150}[source]
    image = Image.fromarray(np.clip(rng.normal(base, 20, (48, 48)), 0, 255).astype(np.uint8), mode="L")
    draw = ImageDraw.Draw(image)
    if label != "normal":
        offset = {"covid": 8, "pneumonia": 16, "tuberculosis": 24}[label]
        draw.ellipse((offset, offset, offset + 16, offset + 16), fill=240)
    return image


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("loso")
    rows = []
    for source, labels in SOURCES.items():
        for label in labels:
            for split, count in PER_SPLIT.items():
                for i in range(count):
                    path = f"xray/{split}/{label}/{source}-{label}-{i}.png"
                    (root / path).parent.mkdir(parents=True, exist_ok=True)
                    _picture(label, i + 10 * len(split), source).save(root / path)
                    rows.append({"path": path, "modality": "xray", "split": split, "label": label,
                                 "source_dataset": source, "group_id": f"{source}-{label}-{split}-{i}"})  # fmt: skip
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def random_backbone_weights(tmp_path_factory):
    """A MobileNetV2 weights file as training.pretrained writes one (random weights: no download)."""
    import keras

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("weights") / "mobilenetv2_imagenet_notop.weights.h5"
    keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3)).save_weights(path)
    return path


@pytest.fixture(scope="module")
def tiny_features(tiny_data, random_backbone_weights, tmp_path_factory):
    dataset = discover(tiny_data, "xray")
    spec = Preprocessing(SIZE, SIZE, "unit", "equalize", 0.1)
    cache = tmp_path_factory.mktemp("cache")
    features, augmented = crossval.features_for(dataset, "mobilenetv2", spec, random_backbone_weights, cache, 0)
    return dataset, features, augmented, cache


def test_wilson_interval_known_values():
    assert crossval.wilson(0, 10) == pytest.approx([0.0, 0.2775], abs=1e-4)
    assert crossval.wilson(5, 10) == pytest.approx([0.2366, 0.7634], abs=1e-4)
    assert crossval.wilson(0, 0) is None


def test_each_fold_scores_every_image_of_its_source_and_names_untrained_classes(tiny_features):
    dataset, features, augmented, _ = tiny_features
    folds = crossval.leave_one_source_out(dataset, features, augmented, held_out=list(SOURCES), input_size=SIZE)

    assert list(folds) == list(SOURCES)
    per_split = sum(PER_SPLIT.values())
    for source, labels in SOURCES.items():
        fold = folds[source]
        assert fold["n"] == per_split * len(labels)
        assert set(fold["per_class"]) == set(labels)
        assert fold["normals_called_normal"]["n"] == per_split
        assert 0.0 <= fold["ece"] <= 1.0
        assert 0.0 <= fold["border_mass_mean"] <= 1.0
        assert fold["gate_refused"]["n"] == fold["n"]
    assert folds["gamma"]["classes_not_trained"] == ["tuberculosis"]  # gamma is the only TB source
    assert folds["alpha"]["classes_not_trained"] == []
    table = crossval.loso_markdown(folds)
    assert "| gamma |" in table
    assert "not trained (only source)" in table


def test_augmented_features_cover_training_images_only_and_are_cached(tiny_features, random_backbone_weights):
    dataset, features, augmented, cache = tiny_features
    train = np.array([s.split == "train" for s in dataset.samples])
    assert np.abs(augmented.pooled[~train]).max() == 0.0
    # Cues change what the backbone sees (random weights give tiny activations: compare relatively).
    changed = ~np.isclose(augmented.pooled[train], features.pooled[train], rtol=1e-3, atol=0.0).all(axis=1)
    assert changed.mean() > 0.5
    spec = Preprocessing(SIZE, SIZE, "unit", "equalize", 0.1)
    again = extract(dataset.samples, arch="mobilenetv2", spec=spec, weights=random_backbone_weights, cache_dir=cache)
    assert np.array_equal(again.pooled, features.pooled)


def test_direct_gradcam_equals_the_gradient_of_the_shipped_network(tiny_features, random_backbone_weights):
    """The fold heatmaps are the worker's Grad-CAM: checked against TensorFlow's gradient on the assembled model."""
    import keras
    import tensorflow as tf

    dataset, features, _, _ = tiny_features
    rng = np.random.default_rng(0)
    head = crossval.Head(kernel=rng.normal(0, 0.05, (features.pooled.shape[1], 4)), bias=rng.normal(0, 0.1, 4))
    model = frozen.build_shipped_model("mobilenetv2", 4, SIZE, random_backbone_weights, head)
    from training.features import prepared

    spec = Preprocessing(SIZE, SIZE, "unit", "equalize", 0.1)
    batch = np.stack([prepared(s.path, spec, None) for s in dataset.samples[:3]]).astype(np.float32)
    inner = keras.Model(model.inputs, [model.get_layer("pool").input, model.outputs[0]])
    with tf.GradientTape() as tape:
        fmap, probs = inner(batch, training=False)
        tape.watch(fmap)
        top = tf.argmax(probs, axis=1)
        score = tf.reduce_sum(tf.math.log(tf.gather(probs, top, batch_dims=1)))
    alpha = tf.reduce_mean(tape.gradient(score, fmap), axis=(1, 2), keepdims=True)
    expected = np.maximum(np.asarray(tf.reduce_sum(alpha * fmap, axis=-1)), 0.0)

    direct = crossval.gradcam(np.asarray(fmap), head, np.asarray(probs, dtype=np.float64))
    hw = expected.shape[1] * expected.shape[2]
    assert np.allclose(direct / hw, expected, atol=1e-5 * max(1.0, float(expected.max())))


def test_border_mass_measures_the_outer_band():
    edge = np.zeros((1, 10, 10))
    edge[0, 0, :] = 1.0
    centre = np.zeros((1, 10, 10))
    centre[0, 4:6, 4:6] = 1.0
    assert crossval.border_mass(edge, 100)[0] > 0.5
    assert crossval.border_mass(centre, 100)[0] == pytest.approx(0.0, abs=1e-6)


def test_frozen_training_ships_a_folder_the_platform_loads(tiny_data, random_backbone_weights, tmp_path):
    from ml.registry import ModelSpec

    out = tmp_path / "xray-tiny-frozen"
    args = frozen.parse_args(
        ["xray", "--data", str(tiny_data), "--size", str(SIZE), "--weights", str(random_backbone_weights),
         "--contrast", "equalize", "--border", "0.1", "--augment", "--balance-within-source",
         "--max-train-per-source-class", "0", "--bootstrap", "20", "--no-baselines", "--cache", str(tmp_path / "c"),
         "--name", "xray-tiny-frozen", "--version", "0.1.0", "--out", str(out)]
    )  # fmt: skip
    frozen.train_frozen(args)

    spec = ModelSpec.from_folder(out)
    assert spec.preprocessing == Preprocessing(SIZE, SIZE, "unit", "equalize", 0.1)

    def no_nan(token):
        raise AssertionError(f"model.json holds {token}")

    meta = json.loads((out / "model.json").read_text(), parse_constant=no_nan)
    assert set(meta["leave_one_source_out"]["folds"]) == set(SOURCES)
    assert meta["external_validation"] == "leave one source out"
    assert meta["recommended_status"] == "silent"
    assert meta["shortcut_defences"] == {"contrast": "equalize", "border_mask": 0.1, "cue_augmentation": True,
                                         "balance_within_source": True}  # fmt: skip
    assert meta["training"]["assembled_model_gap"] < 1e-3
    assert "threshold" in meta["gate"]
    assert (out / "gate.npz").is_file()
    card = (out / "CARD.md").read_text()
    assert card.index("## Leave one source out") < card.index("## Test split")
    assert "| gamma |" in card

    import keras

    model = keras.saving.load_model(out / "model.keras", compile=False)
    from training.features import prepared

    probs = np.asarray(
        model.predict_on_batch(
            prepared(tiny_data / "xray/test/normal/alpha-normal-0.png", spec.preprocessing, None)[None]
        )
    )
    assert probs.shape == (1, 4)
    assert math.isclose(float(probs.sum()), 1.0, rel_tol=1e-5)


def test_a_single_source_model_says_it_has_no_external_validation(tiny_data, random_backbone_weights, tmp_path):
    import shutil

    single = tmp_path / "single"
    shutil.copytree(tiny_data, single)
    manifest = single / "manifest.csv"
    rows = [r for r in csv.DictReader(manifest.open()) if r["source_dataset"] == "beta"]
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "one-source"
    args = frozen.parse_args(
        ["xray", "--data", str(single), "--size", str(SIZE), "--weights", str(random_backbone_weights),
         "--max-train-per-source-class", "0", "--bootstrap", "20", "--no-baselines", "--cache", str(tmp_path / "c"),
         "--name", "one-source", "--version", "0.1.0", "--out", str(out)]
    )  # fmt: skip
    frozen.train_frozen(args)
    meta = json.loads((out / "model.json").read_text())
    assert meta["external_validation"] == "none"
    assert meta["leave_one_source_out"] is None
    assert "**This model has no external validation.**" in (out / "CARD.md").read_text()
