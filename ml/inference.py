"""Run a model on an image inside a worker process.

Keras is imported inside functions only: the web process imports this package for the registry
and must never load TensorFlow. Each worker process loads a model once, lazily, behind a lock;
loading in the parent before fork hangs TensorFlow in the children.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ml.preprocessing import prepare
from ml.registry import ModelSpec

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_loaded: dict[Path, Any] = {}


class InferenceError(RuntimeError):
    """The model could not produce a usable result (a permanent failure, not worth a retry)."""


def load_model(spec: ModelSpec) -> Any:
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
    return list(_loaded)


def calibrate(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling applied to softmax outputs (log-probabilities are logits up to a constant)."""
    if temperature == 1.0:
        return probabilities
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=-1, keepdims=True)


def predict_batch(spec: ModelSpec, batch: np.ndarray) -> np.ndarray:
    model = load_model(spec)
    output = np.asarray(model.predict_on_batch(batch), dtype=np.float64)
    if output.ndim != 2 or output.shape[1] != len(spec.classes):
        raise InferenceError(f"model {spec.label} returned shape {output.shape}, expected {len(spec.classes)} classes")
    if not np.all(np.isfinite(output)):
        raise InferenceError(f"model {spec.label} returned non-finite probabilities")
    return calibrate(output, spec.temperature)


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
