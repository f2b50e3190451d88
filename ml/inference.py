"""Run a model on an image inside a worker process.

Two engines give the same results up to float32 rounding (tests/test_onnx_engine.py: probabilities
within 1e-5, 2e-5 on xray-mobilenetv2 2.0.0 (measured 1.3e-5), gate features 1e-4, heatmaps 1e-3; the
compact models agree to about 1e-6):
- ONNX Runtime on the folder's model.onnx (ml.onnx_engine), the worker's engine: faster, and a
  process that uses it never imports TensorFlow;
- TensorFlow on model.keras, for a folder without a current model.onnx, a head whose Grad-CAM
  needs the gradient, or a machine without onnxruntime. Also what training uses.

Keras and onnxruntime are imported inside functions only: the web process imports this package
for the registry. Each worker process loads a model once, lazily, behind a lock; loading
TensorFlow in the parent before fork hangs it in the children.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ml.onnx_engine import EngineUnavailable, OnnxModel, open_model, spinning_from_env, threads_from_env
from ml.preprocessing import prepare
from ml.registry import ModelSpec

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_loaded: dict[Path, Any] = {}
# model.keras path -> the ONNX Runtime model serving it, or why there is none (TensorFlow serves it).
_onnx: dict[Path, OnnxModel | EngineUnavailable] = {}

ENGINES = ("auto", "onnx", "tensorflow")


class InferenceError(RuntimeError):
    """The model could not produce a usable result (a permanent failure, not worth a retry)."""


def load_model(spec: ModelSpec) -> Any:
    """The Keras model (TensorFlow path, training tools)."""
    with _lock:
        model = _loaded.get(spec.model_file)
        if model is None:
            import keras

            model = keras.saving.load_model(spec.model_file, compile=False)
            _loaded[spec.model_file] = model
            # Once per process and model: the worker tests count this line.
            logger.info("Loaded model %s from %s", spec.label, spec.model_file)
        return model


def loaded_model_files() -> list[Path]:
    """The model files this process has loaded, model.keras or model.onnx."""
    onnx_files = [model.path for model in _onnx.values() if isinstance(model, OnnxModel)]
    return [*onnx_files, *_loaded]


def onnx_model(spec: ModelSpec, engine: str = "auto") -> OnnxModel | None:
    """The ONNX Runtime model that serves spec, or None when the TensorFlow path does.

    engine "auto" picks ONNX Runtime whenever it can; "onnx" requires it (InferenceError saying
    why not); "tensorflow" always answers None.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {ENGINES}")
    if engine == "tensorflow":
        return None
    with _lock:
        model = _onnx.get(spec.model_file)
        if model is None:
            try:
                model = open_model(spec.folder, threads=threads_from_env(), spin=spinning_from_env())
            except EngineUnavailable as exc:
                model = exc
                logger.warning("Model %s runs on TensorFlow: %s", spec.label, exc)
            except ValueError as exc:  # XNET_INFERENCE_THREADS or XNET_INFERENCE_SPIN
                raise InferenceError(str(exc)) from None
            else:
                # Once per process and model: the worker tests count this line.
                logger.info("Loaded model %s from %s", spec.label, model.path)
            _onnx[spec.model_file] = model
    if isinstance(model, EngineUnavailable):
        if engine == "onnx":
            raise InferenceError(f"model {spec.label} cannot run on ONNX Runtime: {model}")
        return None
    return model


def load(spec: ModelSpec) -> None:
    """Load whatever serves spec and run it once on a blank image, so the first job waits for
    neither (a worker child's start): the TensorFlow path traces its function on the first call,
    ONNX Runtime allocates its buffers.

    With a current model.onnx this takes a fraction of a second and never imports TensorFlow.
    """
    p = spec.preprocessing
    analyse_inputs(spec, [np.zeros((p.height, p.width, 3), dtype=np.float32)])


def calibrate(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling applied to softmax outputs (log-probabilities are logits up to a constant)."""
    if temperature == 1.0:
        return probabilities
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=-1, keepdims=True)


def _checked(spec: ModelSpec, output: Any) -> np.ndarray:
    probabilities = np.asarray(output, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(spec.classes):
        raise InferenceError(
            f"model {spec.label} returned shape {probabilities.shape}, expected {len(spec.classes)} classes"
        )
    if not np.all(np.isfinite(probabilities)):
        raise InferenceError(f"model {spec.label} returned non-finite probabilities")
    return probabilities


def predict_batch(spec: ModelSpec, batch: np.ndarray, *, engine: str = "auto") -> np.ndarray:
    """Calibrated probabilities for a prepared batch, without features or heatmaps."""
    batch = np.asarray(batch, dtype=np.float32)
    model = onnx_model(spec, engine)
    output = model.probabilities(batch) if model is not None else load_model(spec).predict_on_batch(batch)
    return calibrate(_checked(spec, output), spec.temperature)


def prepare_input(spec: ModelSpec, source: str | Path | BinaryIO) -> np.ndarray:
    """One image file -> the model's input array, with the preprocessing recorded in model.json."""
    return prepare(source, spec.preprocessing)


def predict_inputs(spec: ModelSpec, arrays: list[np.ndarray]) -> list[dict[str, float]]:
    """Class label -> calibrated probability for each prepared image, in one model call."""
    probabilities = predict_batch(spec, np.stack(arrays))
    return [{label: float(p) for label, p in zip(spec.classes, row, strict=True)} for row in probabilities]


def predict(spec: ModelSpec, source: str | Path | BinaryIO) -> dict[str, float]:
    """Class label -> calibrated probability for one image file."""
    return predict_inputs(spec, [prepare_input(spec, source)])[0]


# Gate features and Grad-CAM --------------------------------------------------------------------

_analysers: dict[Path, Any] = {}


@dataclass(frozen=True)
class Analysis:
    """One image's forward pass: calibrated probabilities, the penultimate-layer features (for the
    gate's distance check) and the Grad-CAM of the top class (2-D, 0..1, the model input's size)."""

    probabilities: dict[str, float]
    features: np.ndarray
    heatmap: np.ndarray


def _feature_tensors(model: Any) -> tuple[Any, Any]:
    """The last 4-D feature map (a conv layer, or a whole backbone used as a layer) and the input of
    the classifier (the penultimate features), found from the graph instead of layer names."""
    import keras

    classifier = model.layers[-1]
    penultimate = classifier.input
    for layer in reversed(model.layers[:-1]):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        # The layer's call in this model's graph: its last node. `layer.output` would be a nested
        # backbone's own internal output (node 0), not connected to this model's input.
        output = layer._inbound_nodes[-1].output_tensors[0]
        if len(output.shape) == 4:
            return output, penultimate
    raise InferenceError("the model has no 4-D feature map to compute a heatmap from")


def _analyser(spec: ModelSpec) -> Any:
    """A compiled function: batch -> (probabilities, features, Grad-CAM), built once per model."""
    model = load_model(spec)
    with _lock:
        function = _analysers.get(spec.model_file)
        if function is not None:
            return function
        import keras
        import tensorflow as tf

        feature_map, penultimate = _feature_tensors(model)
        inner = keras.Model(model.inputs, [feature_map, penultimate, model.outputs[0]])

        # One trace for every batch size: the worker's batches vary from 1 to XNET_BATCH_MAX_SIZE,
        # and retracing a backbone's forward and backward pass costs seconds each time.
        signature = tf.TensorSpec(shape=(None, *model.inputs[0].shape[1:]), dtype=tf.float32)

        @tf.function(input_signature=[signature])
        def analyse(batch):
            with tf.GradientTape() as tape:
                fmap, features, probabilities = inner(batch, training=False)
                tape.watch(fmap)
                top = tf.argmax(probabilities, axis=1)
                # The log-probability's gradient, up to the factor (1 - p_top) that scaling the map
                # to its peak removes: log-odds of the top class against each other class, weighted
                # by their share of the rest (held constant). Differentiating log p_top itself gives
                # a blank map when the softmax saturates (1 - p_top is 0 in float32).
                top_hot = tf.one_hot(top, tf.shape(probabilities)[1], dtype=probabilities.dtype)
                rest = probabilities * (1.0 - top_hot)
                share = tf.stop_gradient(rest / tf.maximum(tf.reduce_sum(rest, axis=1, keepdims=True), 1e-30))
                log_p = tf.math.log(probabilities + 1e-30)
                log_top = tf.reduce_sum(log_p * top_hot, axis=1, keepdims=True)
                score = tf.reduce_sum(share * (log_top - log_p))
            grads = tape.gradient(score, fmap)
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
            cam = tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1))
            return probabilities, tf.reshape(features, (tf.shape(features)[0], -1)), cam

        _analysers[spec.model_file] = analyse
        return analyse


@functools.lru_cache(maxsize=16)
def _resize_matrix(source: int, target: int) -> np.ndarray:
    """(target, source) weights of Pillow's bilinear resize along one axis, found by resizing each
    unit vector with Pillow itself: the same filter and edges, as one matrix product."""
    from PIL import Image as PILImage

    matrix = np.empty((target, source), dtype=np.float32)
    for index, unit in enumerate(np.eye(source, dtype=np.float32)):
        row = PILImage.fromarray(unit[None, :], mode="F").resize((target, 1), PILImage.Resampling.BILINEAR)
        matrix[:, index] = np.asarray(row, dtype=np.float32)[0]
    return matrix


def _upsampled(cams: np.ndarray, width: int, height: int) -> np.ndarray:
    """Grad-CAMs (batch, h, w) -> (batch, height, width) in 0..1: each divided by its peak, then
    resized bilinearly (Pillow's filter; a map with no positive value stays blank).

    Two matrix products for the whole batch instead of one Pillow image per map: at 128 px this was
    the worker's largest cost outside the model call (0.5 ms an image).
    """
    cams = np.asarray(cams, dtype=np.float32)
    peaks = cams.max(axis=(1, 2))
    usable = np.isfinite(peaks) & (peaks > 1e-12)
    scaled = np.where(usable[:, None, None], cams / np.where(usable, peaks, 1.0)[:, None, None], 0.0)
    rows = _resize_matrix(cams.shape[1], height)
    columns = _resize_matrix(cams.shape[2], width)
    resized = rows @ scaled.astype(np.float32) @ columns.T
    return np.clip(resized, 0.0, 1.0, out=resized)


def analyse_inputs(spec: ModelSpec, arrays: list[np.ndarray], *, engine: str = "auto") -> list[Analysis]:
    """Probabilities, gate features and the top class's Grad-CAM for each prepared image, in one
    call over the batch: ONNX Runtime's forward pass (the Grad-CAM inside the graph), or
    TensorFlow's forward and backward pass."""
    if len(arrays) == 1 and arrays[0].dtype == np.float32 and arrays[0].flags.c_contiguous:
        batch = arrays[0][None]  # a view: the worker's usual batch of one needs no copy
    else:
        batch = np.stack(arrays, dtype=np.float32)  # one copy: astype after stack would make two
    model = onnx_model(spec, engine)
    if model is not None:
        probabilities, features, cams = model.run(batch)
    else:
        probabilities, features, cams = (np.asarray(t) for t in _analyser(spec)(batch))
    calibrated = calibrate(_checked(spec, probabilities), spec.temperature)
    heatmaps = _upsampled(cams, spec.preprocessing.width, spec.preprocessing.height)
    features = np.asarray(features, dtype=np.float32)
    return [
        Analysis(
            probabilities={label: float(p) for label, p in zip(spec.classes, row, strict=True)},
            features=features[i],
            heatmap=heatmaps[i],
        )
        for i, row in enumerate(calibrated)
    ]


def features_batch(spec: ModelSpec, batch: np.ndarray) -> np.ndarray:
    """Penultimate-layer features only, for calibrating the gate (training.gate): no gradients."""
    import keras

    model = load_model(spec)
    key = spec.model_file.with_suffix(".features")
    with _lock:
        extractor = _analysers.get(key)
        if extractor is None:
            extractor = keras.Model(model.inputs, _feature_tensors(model)[1])
            _analysers[key] = extractor
    features = np.asarray(extractor.predict_on_batch(np.asarray(batch, dtype=np.float32)), dtype=np.float32)
    return features.reshape(len(features), -1)
