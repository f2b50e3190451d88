"""Augmentations against hospital cues: what a network could learn instead of the disease.

In ../shared/data the source gives the label away: Spanish COVID films carry burned-in text
("DCHA", "PORTATIL"), paper figures carry arrows and captions, sources differ in resolution,
borders, padding and exposure. Drawing those cues onto images of *every* class at random makes
them useless as evidence, so the loss can only fall through what differs inside the lungs.

Each function takes and returns an 8-bit greyscale PIL image and draws its randomness from the
generator it is given, so a seed reproduces the same picture (tests check shape, range and
determinism). `add_cues` applies a random subset; training.features calls it on training images.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

# Words of the kind burned into films by modalities and PACS exports, from several hospitals.
WORDS = ("L", "R", "AP", "PA", "DCHA", "IZDA", "PORTATIL", "SUPINE", "ERECT", "LAT", "PORTABLE", "T.", "SITTING")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(6, size))


def _corner_point(rng: np.random.Generator, width: int, height: int, margin: float = 0.2) -> tuple[int, int]:
    """A point in the outer band of the image (where modalities put their text), or anywhere 1 time in 5."""
    if rng.random() < 0.2:
        return int(rng.uniform(0, width * 0.9)), int(rng.uniform(0, height * 0.9))
    x = rng.uniform(0, width * margin) if rng.random() < 0.5 else rng.uniform(width * (1 - margin) - 1, width * 0.92)
    y = rng.uniform(0, height * margin) if rng.random() < 0.5 else rng.uniform(height * (1 - margin) - 1, height * 0.92)
    return int(x), int(y)


def burned_in_text(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One to three words or random letters in white or light grey, mostly near the edges."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width, height = out.size
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.7:
            text = str(rng.choice(WORDS))
        else:
            text = "".join(chr(int(c)) for c in rng.integers(65, 91, size=int(rng.integers(2, 8))))
        size = int(height * rng.uniform(0.03, 0.09))
        draw.text(_corner_point(rng, width, height), text, fill=int(rng.integers(180, 256)), font=_font(size))
    return out


def side_marker(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A lead side marker: a letter in a bright or dark box, as radiographers place on the film."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width, height = out.size
    side = int(height * rng.uniform(0.05, 0.1))
    x, y = _corner_point(rng, width, height)
    box_fill, text_fill = (255, 0) if rng.random() < 0.5 else (0, 255)
    draw.rectangle((x, y, x + side, y + side), fill=box_fill)
    draw.text(
        (x + side * 0.2, y + side * 0.05), str(rng.choice(("L", "R"))), fill=text_fill, font=_font(int(side * 0.8))
    )
    return out


def ruler(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A line of tick marks along one edge."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width, height = out.size
    fill = int(rng.integers(170, 256))
    vertical = rng.random() < 0.5
    offset = int(rng.uniform(0.01, 0.08) * (width if vertical else height))
    step = max(2, int(rng.uniform(0.015, 0.04) * height))
    length = max(2, int(0.02 * height))
    if vertical:
        x = offset if rng.random() < 0.5 else width - 1 - offset
        for y in range(0, height, step):
            draw.line((x, y, x + length, y), fill=fill)
        draw.line((x, 0, x, height), fill=fill)
    else:
        y = offset if rng.random() < 0.5 else height - 1 - offset
        for x in range(0, width, step):
            draw.line((x, y, x, y + length), fill=fill)
        draw.line((0, y, width, y), fill=fill)
    return out


def border_padding(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Black or white bands on one to four sides (letterboxing, scanner borders), same output size."""
    width, height = image.size
    fill = 0 if rng.random() < 0.7 else 255
    pads = [
        int(rng.uniform(0, 0.12) * (width if i % 2 == 0 else height)) if rng.random() < 0.6 else 0 for i in range(4)
    ]
    if not any(pads):
        pads[int(rng.integers(0, 4))] = max(1, int(0.06 * width))
    left, top, right, bottom = pads
    padded = ImageOps.expand(image, border=(left, top, right, bottom), fill=fill)
    return padded.resize((width, height), Image.Resampling.BILINEAR)


def degrade_resolution(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Down- then up-sample: a source's native resolution must not identify it."""
    width, height = image.size
    factor = rng.uniform(0.3, 0.8)
    small = image.resize((max(8, int(width * factor)), max(8, int(height * factor))), Image.Resampling.BILINEAR)
    return small.resize((width, height), Image.Resampling.BILINEAR)


def jpeg_artefacts(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(15, 75)))
    buffer.seek(0)
    return Image.open(buffer).convert("L")


def exposure(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gamma, contrast and brightness changes of the kind different detectors and settings give."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = array ** rng.uniform(0.6, 1.6)
    mean = float(array.mean())
    array = (array - mean) * rng.uniform(0.75, 1.25) + mean + rng.uniform(-0.1, 0.1)
    return Image.fromarray((np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8), mode="L")


CUES = {
    "text": (burned_in_text, 0.5),
    "marker": (side_marker, 0.4),
    "ruler": (ruler, 0.2),
    "border": (border_padding, 0.3),
    "resolution": (degrade_resolution, 0.4),
    "jpeg": (jpeg_artefacts, 0.3),
    "exposure": (exposure, 0.5),
}


def add_cues(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Apply each cue with its probability, in a fixed order (so a seed gives one picture)."""
    out = image.convert("L")
    for function, probability in CUES.values():
        if rng.random() < probability:
            out = function(out, rng)
    return out
