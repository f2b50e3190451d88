"""Convert a model folder's model.keras into model.onnx, the file the worker runs on ONNX Runtime.

    python -m ml.export_onnx FOLDER [FOLDER ...]          # convert (training.train's last step)
    python -m ml.export_onnx --if-stale MODEL_DIR         # every folder whose model.onnx is missing
                                                          # or was made from another model.keras

Needs TensorFlow, Keras, tf2onnx and onnx: it runs at training or install time, or in a
subprocess at worker start, never inside a worker process (which then never imports TensorFlow).

The graph does the worker's whole forward pass in one call. Its outputs:
- "probabilities": the model's softmax output (uncalibrated, as model.keras gives it);
- "features": the classifier's input, flattened (the gate's distance check);
- "cam": the top class's Grad-CAM before upsampling, only for a head of global average pooling,
  dropout and a dense softmax (every architecture in training/architectures.py). For that head the
  gradient of the top class's log-probability with respect to the last feature map has a closed
  form, the same at every position: kernel @ (one_hot(top) - probabilities) / (h * w). So the
  TensorFlow path's GradientTape is not needed and the heatmaps are equal up to rounding. Any other
  head gets no "cam" output, and the worker keeps the TensorFlow path for it (ml.inference).

model.onnx records in its metadata the SHA-256 of the model.keras it came from, so a replaced
model.keras is noticed whatever the files' modification times (git does not keep them).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ml.registry import installed_models

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
# Bump when the graph's outputs change: older files are then converted again.
FORMAT = "2"  # 2: the heatmap weights avoid 1 - p_top (exact, and no blank map when the softmax saturates)
OPSET = 17
META_FORMAT = "xnet_onnx_format"
META_SOURCE = "xnet_source_sha256"
META_HEATMAP = "xnet_heatmap"  # "direct": the graph has a "cam" output; "none": it has not


class ExportError(RuntimeError):
    """model.keras could not be converted (unreadable file, an op tf2onnx does not know)."""


def source_digest(keras_file: Path) -> str:
    digest = hashlib.sha256()
    with open(keras_file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(onnx_file: Path) -> dict[str, str]:
    """The xnet_* metadata of a model.onnx ({} when the file is missing or unreadable)."""
    import onnx

    try:
        model = onnx.load_model(str(onnx_file), load_external_data=False)
    except Exception:  # a missing, truncated or foreign file: all mean "convert again"
        return {}
    return {prop.key: prop.value for prop in model.metadata_props}


def is_fresh(folder: Path, metadata: dict[str, str] | None = None) -> bool:
    """model.onnx exists, has the current format, and was converted from this model.keras."""
    onnx_file = folder / ONNX_FILE
    if metadata is None:
        if not onnx_file.is_file():
            return False
        metadata = read_metadata(onnx_file)
    return metadata.get(META_FORMAT) == FORMAT and metadata.get(META_SOURCE) == source_digest(folder / "model.keras")


def direct_heatmap_head(model, feature_map) -> object | None:
    """The classifier's kernel (channels, classes) when the layers after the last feature map are
    global average pooling, any dropout and a dense softmax, in one chain; None for any other head.

    `feature_map` is the KerasTensor ml.inference finds as the last 4-D output in this model's graph.
    """
    import keras

    def producer(tensor):
        operation, node_index, _ = tensor._keras_history
        return operation, operation._inbound_nodes[node_index]

    if len(model.outputs) != 1:
        return None
    dense, node = producer(model.outputs[0])
    if not isinstance(dense, keras.layers.Dense) or dense.activation is not keras.activations.softmax:
        return None
    tensor = node.input_tensors[0]
    layer, node = producer(tensor)
    while isinstance(layer, keras.layers.Dropout):
        tensor = node.input_tensors[0]
        layer, node = producer(tensor)
    if not isinstance(layer, keras.layers.GlobalAveragePooling2D):
        return None
    if layer.data_format != "channels_last" or layer.keepdims or node.input_tensors[0] is not feature_map:
        return None
    return keras.ops.convert_to_numpy(dense.kernel)


def convert(folder: Path) -> Path:
    """Write folder/model.onnx from folder/model.keras (atomically: a reader never sees half a file)."""
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    from ml.inference import _feature_tensors

    keras_file = folder / "model.keras"
    digest = source_digest(keras_file)
    model = keras.saving.load_model(keras_file, compile=False)
    feature_map, penultimate = _feature_tensors(model)
    kernel = direct_heatmap_head(model, feature_map)
    inner = keras.Model(model.inputs, [feature_map, penultimate, model.outputs[0]])
    signature = [tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name="image")]

    @tf.function(input_signature=signature)
    def forward(batch):
        fmap, features, probabilities = inner(batch, training=False)
        outputs = {
            "probabilities": probabilities,
            "features": tf.reshape(features, (tf.shape(features)[0], -1)),
        }
        if kernel is not None:
            # d log p_top / d logits = one_hot(top) - p = (1 - p_top) * (one_hot(top) - q), with q
            # the other classes' share of the rest (q_j = p_j / sum of p_k, k != top). The positive
            # factor (1 - p_top) cancels when the map is scaled to its peak, and dropping it keeps
            # the map when the softmax saturates (1 - p_top is 0 in float32 there, and the map was
            # blank). The TensorFlow path differentiates the same quantity.
            top = tf.argmax(probabilities, axis=1)
            top_hot = tf.one_hot(top, kernel.shape[1], dtype=probabilities.dtype)
            rest = probabilities * (1.0 - top_hot)
            share = rest / tf.maximum(tf.reduce_sum(rest, axis=1, keepdims=True), 1e-30)
            delta = top_hot - share
            weights = tf.matmul(delta, tf.constant(kernel), transpose_b=True)  # (batch, channels)
            height, width = fmap.shape[1], fmap.shape[2]
            flat = tf.reshape(fmap, (tf.shape(fmap)[0], height * width, fmap.shape[3]))
            cam = tf.matmul(flat, weights[:, :, None])[:, :, 0] / float(height * width)
            outputs["cam"] = tf.reshape(tf.nn.relu(cam), (tf.shape(fmap)[0], height, width))
        return outputs

    # tf2onnx logs an optimiser pass it skips (MobileNetV3's hard-swish) as a warning with a
    # traceback; the graph is still complete and equal (tests/test_onnx_engine.py).
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        proto, _ = tf2onnx.convert.from_function(forward, input_signature=signature, opset=OPSET)
    except Exception as exc:  # tf2onnx raises bare Exceptions for unsupported ops
        raise ExportError(f"{keras_file}: cannot convert to ONNX ({exc})") from exc
    _inline_captured_constants(proto, forward.get_concrete_function(), keras_file)
    metadata = {
        META_FORMAT: FORMAT,
        META_SOURCE: digest,
        META_HEATMAP: "direct" if kernel is not None else "none",
        "xnet_converter": f"tf2onnx {tf2onnx.__version__}, keras {keras.__version__}, opset {OPSET}",
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    target = folder / ONNX_FILE
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".model.onnx.")
    os.close(handle)
    try:
        onnx.save_model(proto, temporary)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide it from a worker running as another user
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    logger.info("Converted %s to %s (heatmap: %s)", keras_file, target, metadata[META_HEATMAP])
    return target


def _inline_captured_constants(proto, concrete_function, keras_file: Path) -> None:
    """Turn the graph inputs tf2onnx made of captured constants into initializers.

    tf2onnx freezes variables but leaves constants a layer created eagerly (EfficientNet's
    Normalization mean and variance) as extra graph inputs, which ONNX Runtime then asks the
    caller for (Keras's own `model.export(format="onnx")` has the same gap). Their values are the
    concrete function's captures.
    """
    from onnx import numpy_helper

    captured = {
        internal.name: external.numpy()
        for external, internal in concrete_function.graph.captures
        if hasattr(external, "numpy") and external.dtype.name != "resource"
    }
    extra = [graph_input for graph_input in proto.graph.input if graph_input.name != "image"]
    unknown = [graph_input.name for graph_input in extra if graph_input.name not in captured]
    if unknown:
        raise ExportError(f"{keras_file}: the ONNX graph needs inputs besides the image: {unknown}")
    for graph_input in extra:
        proto.graph.initializer.append(numpy_helper.from_array(captured[graph_input.name], graph_input.name))
        proto.graph.input.remove(graph_input)


def convert_after_training(folder: Path) -> None:
    """The last step of a training run (training.train, training.frozen). tf2onnx needs the
    TensorFlow backend; a JAX run (GPU machines) leaves the file to `python -m ml.export_onnx` or
    to the install step (scripts/run.sh converts stale folders)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        logger.warning("Keras runs on %s: run `python -m ml.export_onnx %s` where TensorFlow is installed",
                       keras.backend.backend(), folder)  # fmt: skip
        return
    convert(folder)


def stale_folders(model_dir: Path) -> list[Path]:
    """Installed model folders whose model.onnx is missing or not made from their model.keras."""
    return [spec.folder for spec in installed_models(model_dir) if not is_fresh(spec.folder)]


def ensure_converted(model_dir: Path, *, timeout: float = 600) -> bool:
    """At worker start, in the main process: convert the stale folders in a subprocess, so the
    worker itself never imports TensorFlow (and nothing is loaded before the pool forks).

    Returns whether every folder is fresh afterwards. A failure is logged, not raised: the worker
    then runs those models on the TensorFlow path, with the same results, only slower.
    """
    command = [sys.executable, "-m", "ml.export_onnx", "--if-stale", str(model_dir)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    root = Path(__file__).resolve().parent.parent
    try:
        result = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        logger.error(
            "ONNX conversion of %s took over %s s; models without model.onnx use TensorFlow", model_dir, timeout
        )
        return False
    if result.returncode != 0:
        logger.error("ONNX conversion of %s failed; those models use TensorFlow:\n%s", model_dir, result.stderr[-4000:])
        return False
    for line in result.stdout.splitlines():
        logger.info("%s", line)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="model folders (or, with --if-stale, model directories)")
    parser.add_argument(
        "--if-stale", action="store_true", help="convert only folders whose model.onnx is missing or out of date"
    )
    args = parser.parse_args(argv)
    folders = [found for path in args.paths for found in stale_folders(path)] if args.if_stale else args.paths
    failed = 0
    for folder in folders:
        if not (folder / "model.keras").is_file():
            print(f"{folder}: no model.keras", file=sys.stderr)
            failed += 1
            continue
        try:
            target = convert(folder)
        except (ExportError, OSError, ValueError) as exc:
            print(str(exc), file=sys.stderr)
            failed += 1
            continue
        print(f"converted {folder / 'model.keras'} -> {target}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
