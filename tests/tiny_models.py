"""Build small but real Keras models in model folders, as a hospital's trained model would be.

Until the models issue ships trained models, tests use these: a real `model.keras` with a
real `model.json`, loaded and run by the same code as production.
"""

from __future__ import annotations

import json
from pathlib import Path

XRAY_CLASSES = ["normal", "pneumonia", "covid", "tuberculosis"]
CT_CLASSES = ["covid", "non_covid"]


def build_model_folder(
    folder: Path,
    *,
    name: str,
    modality: str,
    classes: list[str],
    version: str = "1.0.0",
    size: int = 64,
    seed: int = 0,
) -> Path:
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(size, size, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(classes), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    meta = {
        "format_version": 1,
        "name": name,
        "version": version,
        "modality": modality,
        "classes": classes,
        "preprocessing": {"width": size, "height": size, "scale": "unit", "color": "grey3"},
        "calibration": {"temperature": 1.0},
        "metrics": {},
        "intended_use": "Software tests only: an untrained network with random weights.",
    }
    (folder / "model.json").write_text(json.dumps(meta, indent=2))
    return folder


def build_model_dir(root: Path) -> Path:
    """A model directory with one X-ray and one CT model."""
    build_model_folder(root / "xray-tiny", name="xray-tiny", modality="xray", classes=XRAY_CLASSES)
    build_model_folder(root / "ct-tiny", name="ct-tiny", modality="ct", classes=CT_CLASSES)
    return root
