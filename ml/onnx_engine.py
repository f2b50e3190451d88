"""The worker's engine: a model folder's model.onnx on ONNX Runtime.

One call gives what the worker needs from a batch: probabilities, gate features and the top
class's Grad-CAM (computed inside the graph, see ml.export_onnx). A process that runs models this
way never imports TensorFlow: about a sixth of the memory, and no seconds-long TensorFlow start
when a pool child is replaced.

onnxruntime is imported inside functions: the web process imports ml for the registry.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml.export_onnx import META_HEATMAP, ONNX_FILE, is_fresh

logger = logging.getLogger(__name__)

THREADS_VARIABLE = "XNET_INFERENCE_THREADS"
SPIN_VARIABLE = "XNET_INFERENCE_SPIN"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class EngineUnavailable(RuntimeError):
    """This folder cannot run on ONNX Runtime; the message says why (the TensorFlow path serves it)."""


def threads_from_env() -> int | None:
    """XNET_INFERENCE_THREADS: ONNX Runtime's threads per worker process (unset: one per core).

    Set it when several worker processes share the cores: more inference threads than cores only
    makes them wait for each other.
    """
    raw = os.environ.get(THREADS_VARIABLE, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{THREADS_VARIABLE} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{THREADS_VARIABLE} must be a positive integer, got {raw!r}")
    return value


@dataclass(frozen=True)
class OnnxModel:
    session: Any
    input_name: str
    path: Path

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities, features, cams) for a float32 batch; cams are (batch, h, w), >= 0."""
        probabilities, features, cams = self.session.run(
            ["probabilities", "features", "cam"], {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        )
        return probabilities, features, cams

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """The softmax output only: ONNX Runtime skips the Grad-CAM part of the graph."""
        (output,) = self.session.run(
            ["probabilities"], {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        )
        return output


def spinning_from_env() -> bool:
    """XNET_INFERENCE_SPIN: whether ONNX Runtime's idle threads spin (unset: they sleep).

    Spinning keeps a finished call's threads busy-waiting for the next: on a machine with cores
    to spare, a batch-1 call was about a third faster (benchmarks/README.md, inference); where the
    worker shares its cores (one process per core, the web server, the database) a spinning thread
    takes the core another process needs. Turn it on for a worker with cores of its own.
    """
    raw = os.environ.get(SPIN_VARIABLE, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{SPIN_VARIABLE} must be 1 or 0 (true/false, yes/no, on/off), got {raw!r}")


def session_options(threads: int | None = None, *, spin: bool = False) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    # By default idle threads sleep instead of spinning: spinning wins on an idle machine, but the
    # worker shares its cores (one process per core, the web server, the database), and there a
    # spinning thread takes the core another needs (measured: benchmarks/README.md, inference).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.log_severity_level = 3  # errors only: the worker log is for people
    return options


def open_model(folder: Path, *, threads: int | None = None, spin: bool = False) -> OnnxModel:
    """An ONNX Runtime session on folder/model.onnx, or EngineUnavailable saying why not."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise EngineUnavailable("onnxruntime is not installed") from None
    path = folder / ONNX_FILE
    if not path.is_file():
        raise EngineUnavailable(f"{path} is missing (python -m ml.export_onnx {folder})")
    try:
        session = ort.InferenceSession(
            str(path), sess_options=session_options(threads, spin=spin), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types for a damaged file
        raise EngineUnavailable(f"{path} cannot be loaded ({exc}); convert it again") from None
    metadata = session.get_modelmeta().custom_metadata_map
    if not is_fresh(folder, metadata):
        raise EngineUnavailable(f"{path} was not made from this model.keras (python -m ml.export_onnx {folder})")
    if metadata.get(META_HEATMAP) != "direct":
        raise EngineUnavailable(f"{path} has no direct Grad-CAM: the model's head needs the gradient")
    return OnnxModel(session=session, input_name=session.get_inputs()[0].name, path=path)
