"""Backbones for transfer learning, plus a compact CNN that trains in minutes on a CPU.

Keras 3 only (no TensorFlow-specific calls), so the same code runs on JAX on a GPU machine.
Nothing is downloaded: `weights_path` is a local ImageNet weights file or None (from scratch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras


@dataclass(frozen=True)
class Architecture:
    name: str
    input_size: int
    # Preprocessing scale the backbone expects from ml.preprocessing: "unit" [0,1] or "raw" [0,255].
    scale: str


ARCHITECTURES = {
    "resnet50": Architecture("resnet50", 224, "raw"),
    "xception": Architecture("xception", 299, "unit"),
    "inceptionv3": Architecture("inceptionv3", 299, "unit"),
    "efficientnetb0": Architecture("efficientnetb0", 224, "raw"),
    "mobilenetv3small": Architecture("mobilenetv3small", 224, "raw"),
    "mobilenetv2": Architecture("mobilenetv2", 224, "unit"),
    "compact": Architecture("compact", 128, "unit"),
}


def _compact(inputs: keras.KerasTensor) -> keras.KerasTensor:
    x = inputs
    for filters in (32, 64, 128, 192):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation("relu")(x)
        x = keras.layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation("relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    return x


def _backbone(name: str, inputs: keras.KerasTensor, weights_path: Path | None) -> keras.KerasTensor:
    apps = keras.applications
    shape = tuple(inputs.shape[1:])
    if name == "resnet50":
        # Caffe-style ImageNet preprocessing expressed with built-in layers (serialisable,
        # backend-agnostic). Grey inputs have equal channels, so the BGR swap is moot.
        x = keras.layers.Normalization(mean=[103.939, 116.779, 123.68], variance=[1.0, 1.0, 1.0])(inputs)
        base = apps.ResNet50(include_top=False, weights=None, input_shape=shape)
    elif name in ("xception", "inceptionv3"):
        x = keras.layers.Rescaling(2.0, offset=-1.0)(inputs)
        base = (apps.Xception if name == "xception" else apps.InceptionV3)(
            include_top=False, weights=None, input_shape=shape
        )
    elif name == "efficientnetb0":
        x = inputs
        base = apps.EfficientNetB0(include_top=False, weights=None, input_shape=shape)
    elif name == "mobilenetv2":
        x = keras.layers.Rescaling(2.0, offset=-1.0)(inputs)
        base = apps.MobileNetV2(include_top=False, weights=None, input_shape=shape)
    elif name == "mobilenetv3small":
        x = inputs
        base = apps.MobileNetV3Small(include_top=False, weights=None, input_shape=shape, include_preprocessing=True)
    else:
        raise ValueError(f"unknown architecture {name!r}; choose from {sorted(ARCHITECTURES)}")
    if weights_path is not None:
        try:
            base.load_weights(str(weights_path), skip_mismatch=False)
        except ValueError as exc:
            raise ValueError(f"{weights_path} does not hold {name} weights without the top ({exc})") from exc
    return base(x)


def build_model(
    arch: str, *, n_classes: int, input_size: int | None = None, weights_path: Path | None = None
) -> keras.Model:
    spec = ARCHITECTURES[arch]
    size = input_size or spec.input_size
    inputs = keras.Input(shape=(size, size, 3), name="image")
    features = _compact(inputs) if arch == "compact" else _backbone(arch, inputs, weights_path)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    x = keras.layers.Dropout(0.3)(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"xnet_{arch}")


def set_batch_norm_momentum(model: keras.Model, momentum: float) -> int:
    """Set every BatchNormalization layer's momentum, nested backbones included; returns how many.

    Keras's default (0.99) lets the moving statistics, which inference uses, trail the weights by a
    few hundred steps. From scratch on these CPUs a run has only a few hundred steps, so validation
    sees stale statistics and predicts one class for epochs while training accuracy rises. 0.9
    follows within tens of steps.
    """
    count = 0
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
            count += 1
        stack.extend(getattr(layer, "layers", []))
    return count
