"""ONNX Runtime as the worker's engine: the same probabilities, gate features and Grad-CAM as the
TensorFlow path, for the shipped models, the tiny test models and untrained backbones of
training/architectures.py; the TensorFlow fallback; the conversion command."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ml import export_onnx, inference
from ml.preprocessing import prepare
from ml.registry import ModelSpec
from tests.conftest import RESOURCES
from tests.tiny_models import XRAY_CLASSES, build_model_folder

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "ml" / "models"
# Issue 11 asks for probabilities, gate features and heatmaps equal to the TensorFlow path within
# 1e-5. Probabilities hold it for every model here, and so does everything for the compact models
# (about 1e-6). Two float32 engines summing a deep backbone in different orders do not: on
# xray-mobilenetv2 2.0.0 (224 px) gate features differed by up to 3.2e-5 (values up to 5.9) and
# heatmaps by up to 1.6e-4, where TensorFlow's own batch-of-6 against one-image spread was 5e-6.
# So: features 1e-4 (a gate distance threshold is about 1.5), heatmaps 1e-3 (a quarter of one
# colour level of the stored PNG). A wrong heatmap formula is far outside that: the plain
# class-weight CAM differs from the Grad-CAM by 0.09-0.26 on xray-compact 1.1.0.
#
# Re-measured 2026-12-01 (xray-mobilenetv2 2.0.0, the six inputs below): ONNX Runtime against
# TensorFlow, probabilities 1.29e-5 (one chest film; 1.02e-5 with TF_ENABLE_ONEDNN_OPTS=0, so not
# oneDNN's own order alone), features 3.5e-5 (largest value 5.94: 6e-6 relative), heatmaps 2.4e-5;
# within one engine a batch and single images agree to 0 (ONNX Runtime) and 9e-8 / 0 / 4e-7
# (TensorFlow). The two engines' float32 kernels sum a 50-layer backbone in different orders; no
# setting of either closes that. That model's probabilities are held to 2e-5, the measured bound
# with room; every other model keeps 1e-5.
TOLERANCE = 1e-5
PROBABILITY_TOLERANCE = {"xray-mobilenetv2-2.0.0": 2e-5}
FEATURE_TOLERANCE = 1e-4
HEATMAP_TOLERANCE = 1e-3
SHIPPED_NAMES = sorted(meta.parent.name for meta in SHIPPED.glob("*/model.json"))


def _model_json(folder: Path, *, name: str, size: int, scale: str) -> None:
    meta = {
        "format_version": 1,
        "name": name,
        "version": "1.0.0",
        "modality": "xray",
        "classes": XRAY_CLASSES,
        "preprocessing": {"width": size, "height": size, "scale": scale, "color": "grey3"},
    }
    (folder / "model.json").write_text(json.dumps(meta))


def build_architecture_folder(folder: Path, arch: str, size: int) -> Path:
    """An untrained training.architectures model, as the lead's training script builds it.

    Random weights only: batch-norm statistics are set from one batch of random images (momentum
    0, one training-mode call) so activations keep their scale through a deep backbone, and the
    classifier's weights are spread so each image has a clear top class instead of a four-way tie.
    """
    import keras

    from training.architectures import ARCHITECTURES, build_model, set_batch_norm_momentum

    keras.utils.set_random_seed(0)
    scale = ARCHITECTURES[arch].scale
    model = build_model(arch, n_classes=len(XRAY_CLASSES), input_size=size)
    set_batch_norm_momentum(model, 0.0)
    high = 255.0 if scale == "raw" else 1.0
    model(np.random.default_rng(0).random((8, size, size, 3), dtype=np.float32) * high, training=True)
    dense = model.layers[-1]
    kernel, bias = dense.get_weights()
    dense.set_weights([np.random.default_rng(1).normal(0, 0.5, kernel.shape).astype(np.float32), bias])
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    _model_json(folder, name=f"untrained-{arch}", size=size, scale=scale)
    return folder


def build_gradient_head_folder(folder: Path) -> Path:
    """A head the direct heatmap cannot serve: a hidden dense layer between pooling and softmax."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(8, activation="relu")(x)
    outputs = keras.layers.Dense(len(XRAY_CLASSES), activation="softmax")(x)
    folder.mkdir(parents=True)
    keras.Model(inputs, outputs).save(folder / "model.keras")
    _model_json(folder, name="hidden-dense-head", size=32, scale="unit")
    return folder


def inputs_for(spec: ModelSpec) -> list[np.ndarray]:
    """The four chest X-rays of tests/resources, prepared as the worker prepares them, and two
    random images (the full input range)."""
    arrays = [prepare(path, spec.preprocessing) for path in sorted(RESOURCES.glob("kermany_*.jpg"))]
    p = spec.preprocessing
    high = 255.0 if p.scale == "raw" else 1.0
    rng = np.random.default_rng(7)
    return arrays + [rng.random((p.height, p.width, 3), dtype=np.float32) * high for _ in range(2)]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    """Model folders with a current model.onnx: copies of the shipped ones (never written in
    place), the tiny test models, and untrained compact and MobileNetV3-Small models."""
    root = tmp_path_factory.mktemp("onnx-models")
    folders = {}
    for meta in sorted(SHIPPED.glob("*/model.json")):
        folders[meta.parent.name] = Path(shutil.copytree(meta.parent, root / meta.parent.name))
    folders["xray-tiny"] = build_model_folder(
        root / "xray-tiny", name="xray-tiny", modality="xray", classes=XRAY_CLASSES
    )
    folders["ct-tiny"] = build_model_folder(
        root / "ct-tiny", name="ct-tiny", modality="ct", classes=["covid", "non_covid"]
    )
    folders["compact"] = build_architecture_folder(root / "compact", "compact", 64)
    folders["mobilenetv3small"] = build_architecture_folder(root / "mobilenetv3small", "mobilenetv3small", 96)
    for folder in folders.values():
        if not export_onnx.is_fresh(folder):
            export_onnx.convert(folder)
    return folders


def test_shipped_models_carry_a_current_model_onnx():
    """The worker runs them on ONNX Runtime without converting anything at start."""
    assert SHIPPED_NAMES
    for folder in (SHIPPED / name for name in SHIPPED_NAMES):
        assert export_onnx.is_fresh(folder), f"{folder}: run python -m ml.export_onnx {folder}"
        assert (folder / export_onnx.ONNX_FILE).stat().st_size < 30 * 1024 * 1024


@pytest.mark.parametrize("name", [*SHIPPED_NAMES, "xray-tiny", "ct-tiny", "compact", "mobilenetv3small"])
def test_onnx_runtime_gives_the_tensorflow_paths_results(converted, name):
    spec = ModelSpec.from_folder(converted[name])
    arrays = inputs_for(spec)
    assert inference.onnx_model(spec) is not None  # the worker's default engine serves it

    onnx_results = inference.analyse_inputs(spec, arrays)
    tf_results = inference.analyse_inputs(spec, arrays, engine="tensorflow")

    for ort_result, tf_result in zip(onnx_results, tf_results, strict=True):
        labels = list(spec.classes)
        np.testing.assert_allclose(
            [ort_result.probabilities[c] for c in labels],
            [tf_result.probabilities[c] for c in labels],
            atol=PROBABILITY_TOLERANCE.get(name, TOLERANCE),
        )
        np.testing.assert_allclose(ort_result.features, tf_result.features, atol=FEATURE_TOLERANCE, rtol=TOLERANCE)
        assert (
            ort_result.heatmap.shape == tf_result.heatmap.shape == (spec.preprocessing.height, spec.preprocessing.width)
        )
        np.testing.assert_allclose(ort_result.heatmap, tf_result.heatmap, atol=HEATMAP_TOLERANCE)
        # A real map on every image, saturated predictions included (ct-mobilenetv2 2.0.0 gives
        # some slices p = 1.0 in float32, where the plain log-probability gradient is exactly 0).
        assert tf_result.heatmap.max() > 0.5
    np.testing.assert_allclose(
        inference.predict_batch(spec, np.stack(arrays)),
        inference.predict_batch(spec, np.stack(arrays), engine="tensorflow"),
        atol=PROBABILITY_TOLERANCE.get(name, TOLERANCE),
    )


def test_batch_results_equal_single_image_results(converted):
    spec = ModelSpec.from_folder(converted["compact"])
    arrays = inputs_for(spec)
    batch = inference.analyse_inputs(spec, arrays)
    for array, together in zip(arrays, batch, strict=True):
        (alone,) = inference.analyse_inputs(spec, [array])
        assert alone.probabilities == pytest.approx(together.probabilities, abs=TOLERANCE)
        np.testing.assert_allclose(alone.heatmap, together.heatmap, atol=TOLERANCE)


@pytest.mark.parametrize(("source", "target"), [((8, 8), (128, 128)), ((7, 7), (224, 224)), ((4, 6), (100, 64))])
def test_heatmaps_are_pillows_bilinear_resize_of_each_map_over_its_peak(source, target):
    """The batch is upsampled with two matrix products; each map must still be what Pillow's
    bilinear resize makes of it (the page draws it over the image pixel for pixel)."""
    from PIL import Image

    rng = np.random.default_rng(3)
    cams = np.maximum(rng.normal(size=(4, *source)), 0).astype(np.float32)
    cams[1] = 0.0  # nothing positive: a blank map, not a division by zero
    width, height = target
    maps = inference._upsampled(cams, width, height)
    assert maps.shape == (4, height, width)
    np.testing.assert_array_equal(maps[1], 0.0)
    for cam, heatmap in zip(cams[[0, 2, 3]], maps[[0, 2, 3]], strict=True):
        expected = Image.fromarray(cam / cam.max(), mode="F").resize((width, height), Image.Resampling.BILINEAR)
        np.testing.assert_allclose(heatmap, np.clip(np.asarray(expected), 0, 1), atol=1e-6)
        assert heatmap.max() > 0.5


def test_a_head_that_needs_the_gradient_runs_on_tensorflow(tmp_path):
    folder = build_gradient_head_folder(tmp_path / "hidden-dense-head")
    export_onnx.convert(folder)
    assert export_onnx.read_metadata(folder / "model.onnx")[export_onnx.META_HEATMAP] == "none"
    spec = ModelSpec.from_folder(folder)
    assert inference.onnx_model(spec) is None
    arrays = inputs_for(spec)
    automatic = inference.analyse_inputs(spec, arrays)
    gradient = inference.analyse_inputs(spec, arrays, engine="tensorflow")
    for a, b in zip(automatic, gradient, strict=True):
        assert a.probabilities == b.probabilities
        np.testing.assert_array_equal(a.heatmap, b.heatmap)
    with pytest.raises(inference.InferenceError, match="needs the gradient"):
        inference.analyse_inputs(spec, arrays, engine="onnx")


def test_a_folder_without_model_onnx_runs_on_tensorflow_and_says_so(tmp_path, caplog):
    folder = build_model_folder(tmp_path / "plain", name="plain", modality="xray", classes=XRAY_CLASSES)
    spec = ModelSpec.from_folder(folder)
    with caplog.at_level(logging.WARNING, logger="ml.inference"):
        results = inference.analyse_inputs(spec, inputs_for(spec))
    assert len(results) == 6
    assert "runs on TensorFlow" in caplog.text
    assert "python -m ml.export_onnx" in caplog.text
    assert spec.model_file in inference.loaded_model_files()


def test_a_model_onnx_from_another_model_keras_is_not_used(tmp_path):
    """A replaced model.keras (same folder, new weights) must not run on the old graph."""
    folder = build_model_folder(tmp_path / "replaced", name="replaced", modality="xray", classes=XRAY_CLASSES)
    export_onnx.convert(folder)
    build_model_folder(folder, name="replaced", modality="xray", classes=XRAY_CLASSES, seed=1)
    assert not export_onnx.is_fresh(folder)
    spec = ModelSpec.from_folder(folder)
    assert inference.onnx_model(spec) is None
    with pytest.raises(inference.InferenceError, match="not made from this model.keras"):
        inference.predict_batch(spec, np.stack(inputs_for(spec)), engine="onnx")


def test_without_onnxruntime_the_worker_uses_tensorflow(converted, tmp_path, monkeypatch):
    folder = Path(shutil.copytree(converted["xray-tiny"], tmp_path / "xray-tiny"))
    spec = ModelSpec.from_folder(folder)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` meets when it is not installed
    with pytest.raises(inference.InferenceError, match="onnxruntime is not installed"):
        inference.analyse_inputs(spec, inputs_for(spec), engine="onnx")
    results = inference.analyse_inputs(spec, inputs_for(spec))
    assert len(results) == 6
    assert inference.onnx_model(spec) is None


def test_inference_threads_setting_is_checked(converted, tmp_path, monkeypatch):
    folder = Path(shutil.copytree(converted["ct-tiny"], tmp_path / "ct-tiny"))
    spec = ModelSpec.from_folder(folder)
    monkeypatch.setenv("XNET_INFERENCE_THREADS", "zero")
    with pytest.raises(inference.InferenceError, match="XNET_INFERENCE_THREADS must be a positive integer"):
        inference.analyse_inputs(spec, inputs_for(spec))
    monkeypatch.setenv("XNET_INFERENCE_THREADS", "1")
    assert inference.onnx_model(spec).session.get_session_options().intra_op_num_threads == 1


def test_inference_spinning_setting_is_checked(converted, tmp_path, monkeypatch):
    spec = ModelSpec.from_folder(Path(shutil.copytree(converted["ct-tiny"], tmp_path / "ct-tiny")))
    monkeypatch.setenv("XNET_INFERENCE_SPIN", "sometimes")
    with pytest.raises(inference.InferenceError, match="XNET_INFERENCE_SPIN must be 1 or 0"):
        inference.analyse_inputs(spec, inputs_for(spec))
    for raw, expected in (("", "0"), ("yes", "1")):
        monkeypatch.setenv("XNET_INFERENCE_SPIN", raw)
        # A folder of its own each time: a process opens each model once.
        spec = ModelSpec.from_folder(Path(shutil.copytree(converted["ct-tiny"], tmp_path / f"ct-tiny-{raw}")))
        options = inference.onnx_model(spec).session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == expected


def test_model_loads_once_per_process(converted, tmp_path, caplog):
    folder = Path(shutil.copytree(converted["xray-tiny"], tmp_path / "xray-tiny"))
    spec = ModelSpec.from_folder(folder)
    with caplog.at_level(logging.INFO, logger="ml.inference"):
        inference.load(spec)
        inference.analyse_inputs(spec, inputs_for(spec)[:1])
        inference.predict_batch(spec, np.stack(inputs_for(spec)))
    assert caplog.text.count("Loaded model xray-tiny 1.0.0 from") == 1
    assert f"from {folder / 'model.onnx'}" in caplog.text


# The conversion command, and a worker process that never imports TensorFlow ------------------


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
    )  # fmt: skip


def test_conversion_command_and_the_worker_start_check(tmp_path):
    model_dir = tmp_path / "models"
    folder = build_model_folder(model_dir / "xray-tiny", name="xray-tiny", modality="xray", classes=XRAY_CLASSES)
    build_model_folder(model_dir / "ct-tiny", name="ct-tiny", modality="ct", classes=["covid", "non_covid"])

    converted = _run(["-m", "ml.export_onnx", str(folder)])
    assert converted.returncode == 0, converted.stderr[-3000:]
    assert f"converted {folder / 'model.keras'} -> {folder / 'model.onnx'}" in converted.stdout
    assert export_onnx.is_fresh(folder)
    assert not export_onnx.is_fresh(model_dir / "ct-tiny")
    first = (folder / "model.onnx").read_bytes()

    # At worker start: only the stale folder is converted.
    assert export_onnx.stale_folders(model_dir) == [model_dir / "ct-tiny"]
    assert export_onnx.ensure_converted(model_dir)
    assert export_onnx.stale_folders(model_dir) == []
    assert (folder / "model.onnx").read_bytes() == first
    assert oct((folder / "model.onnx").stat().st_mode & 0o777) == "0o644"

    missing = _run(["-m", "ml.export_onnx", str(tmp_path / "nothing-here")])
    assert missing.returncode == 1
    assert "no model.keras" in missing.stderr


WORKER = """
import json, resource, sys
from pathlib import Path
import numpy as np
from ml import gate, heatmaps, inference
from ml.registry import ModelSpec

spec = ModelSpec.from_folder(Path(sys.argv[1]))
p = spec.preprocessing
[result] = inference.analyse_inputs(spec, [np.zeros((p.height, p.width, 3), dtype=np.float32)])
heatmaps.heatmap_png(result.heatmap)
print(json.dumps({
    "engine": "onnx" if inference.onnx_model(spec) is not None else "tensorflow",
    "loaded": sorted(m for m in ("tensorflow", "keras") if m in sys.modules),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
}))
"""


def test_a_worker_process_with_model_onnx_never_imports_tensorflow(converted):
    result = _run(["-c", WORKER, str(converted["compact"])])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["engine"] == "onnx"
    assert report["loaded"] == []


def test_a_saturated_prediction_still_gets_its_heatmap_on_both_engines(converted):
    """p_top rounds to 1.0 in float32 for ct-mobilenetv2 2.0.0 on some slices; the log-probability
    gradient is then exactly zero and the map was blank. The heatmap weights avoid 1 - p_top."""
    spec = ModelSpec.from_folder(converted["ct-mobilenetv2-2.0.0"])
    arrays = inputs_for(spec)
    tf_results = inference.analyse_inputs(spec, arrays, engine="tensorflow")
    raw = np.asarray(inference.load_model(spec).predict_on_batch(np.stack(arrays)), dtype=np.float32)
    saturated = [i for i, row in enumerate(raw) if row.max() == np.float32(1.0)]
    assert saturated, "no input saturates this model any more: pick one that does"
    ort_results = inference.analyse_inputs(spec, [arrays[i] for i in saturated])
    for i, ort_result in zip(saturated, ort_results, strict=True):
        assert tf_results[i].heatmap.max() > 0.5
        assert ort_result.heatmap.max() > 0.5
        np.testing.assert_allclose(ort_result.heatmap, tf_results[i].heatmap, atol=HEATMAP_TOLERANCE)
