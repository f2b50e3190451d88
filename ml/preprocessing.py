"""Image preprocessing shared by training and the worker.

The same function turns a file into a model input during training and in production, and the
model folder records its parameters (model.json "preprocessing"), so the two cannot drift.
Greyscale first, resize in grey, then repeat to three channels: cheaper than resizing RGB, and
colour is no cue a radiograph should carry.

Two optional steps defend against hospital cues (training/shortcuts.py measures them): histogram
equalisation, so every source's exposure and contrast look alike, and a border mask that blanks
the outer band where burned-in text, side markers and rulers usually sit. Older model folders
record neither and are prepared exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

CONTRASTS = ("none", "equalize")


@dataclass(frozen=True)
class Preprocessing:
    """Parameters stored in model.json under "preprocessing"."""

    width: int
    height: int
    # "unit": pixel values in [0, 1]; "raw": [0, 255] for backbones that rescale internally.
    scale: str = "unit"
    # "none", or "equalize": histogram equalisation of the resized grey image.
    contrast: str = "none"
    # Fraction of the side blanked (set to black) on every edge after resizing; 0 keeps all.
    border: float = 0.0

    def to_json(self) -> dict:
        data = {"width": self.width, "height": self.height, "scale": self.scale, "color": "grey3"}
        if self.contrast != "none":
            data["contrast"] = self.contrast
        if self.border:
            data["border"] = self.border
        return data

    @classmethod
    def from_json(cls, data: dict) -> Preprocessing:
        scale = data.get("scale", "unit")
        if scale not in ("unit", "raw"):
            raise ValueError(f"unknown preprocessing scale {scale!r}")
        contrast = data.get("contrast", "none")
        if contrast not in CONTRASTS:
            raise ValueError(f"unknown preprocessing contrast {contrast!r}")
        border = float(data.get("border", 0.0))
        if not 0.0 <= border < 0.5:
            raise ValueError(f"preprocessing border must be in [0, 0.5), got {border}")
        return cls(width=int(data["width"]), height=int(data["height"]), scale=scale, contrast=contrast, border=border)


def load_grey(source: str | Path | BinaryIO | Image.Image) -> Image.Image:
    """Open an image as 8-bit greyscale, whatever its mode (RGB, palette, 16-bit...)."""
    image = source if isinstance(source, Image.Image) else Image.open(source)
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        return Image.fromarray(scaled.astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("L")


def resized_grey(image: Image.Image, spec: Preprocessing) -> Image.Image:
    """The model-size greyscale picture, with the contrast step and border mask applied."""
    resized = image.resize((spec.width, spec.height), Image.Resampling.BILINEAR, reducing_gap=3.0)
    if spec.contrast == "equalize":
        resized = ImageOps.equalize(resized)
    if spec.border:
        dx, dy = round(spec.width * spec.border), round(spec.height * spec.border)
        masked = Image.new("L", resized.size, 0)
        masked.paste(resized.crop((dx, dy, spec.width - dx, spec.height - dy)), (dx, dy))
        resized = masked
    return resized


def to_array(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """A greyscale PIL image -> float32 array (height, width, 3) ready for the model."""
    grey = np.asarray(resized_grey(image, spec), dtype=np.float32)
    if spec.scale == "unit":
        grey = grey / 255.0
    return np.repeat(grey[:, :, None], 3, axis=2)


def prepare(source: str | Path | BinaryIO | Image.Image, spec: Preprocessing) -> np.ndarray:
    return to_array(load_grey(source), spec)
