"""A set of images that are not chest radiographs or chest CT, to measure how often the gate refuses them.

Everything is made here, nothing is downloaded: synthetic colour "photos", documents and
screenshots with text, noise, gradients, greyscale photos, and renderings of the non-chest DICOM
objects that pydicom ships for its own tests (MR, ultrasound, nuclear medicine, an extremity
radiograph when the optional pydicom-data package is installed). The same seed gives the same set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# pydicom's own test files (always installed) and pydicom-data's (optional, dev requirements):
# looked up locally with download=False, never fetched.
DICOM_FILES = (
    "MR_small.dcm",
    "examples_overlay.dcm",
    "JPEG2000.dcm",
    "examples_rgb_color.dcm",
    "MR2_UNCR.dcm",
    "RG3_UNCR.dcm",
    "US1_UNCI.dcm",
)

WORDS = [
    "patient",
    "report",
    "findings",
    "impression",
    "lung",
    "heart",
    "normal",
    "study",
    "date",
    "signed",
    "radiology",
    "clinic",
]


@dataclass(frozen=True)
class NonChestImage:
    kind: str
    name: str
    image: Image.Image


def _colour_photo(rng: np.random.Generator, size: int) -> Image.Image:
    """Sky-to-ground colour gradient with coloured blobs and sensor noise: photo-like statistics."""
    y = np.linspace(0, 1, size)[:, None, None]
    top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    array = top * (1 - y) + bottom * y + np.zeros((size, size, 3))
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = rng.integers(0, size, 2)
        r = int(rng.integers(size // 16, size // 3))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.ellipse((int(x0) - r, int(y0) - r, int(x0) + r, int(y0) + r), fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(2))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def _text_lines(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: tuple[int, int, int, int], fill) -> None:
    left, top, right, bottom = box
    y = top
    while y < bottom - 12:
        line = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9))))
        draw.text((left, y), line, fill=fill)
        y += int(rng.integers(12, 20))


def _document(rng: np.random.Generator, size: int) -> Image.Image:
    image = Image.new("L", (size, int(size * 1.3)), 255)
    draw = ImageDraw.Draw(image)
    _text_lines(draw, rng, (size // 10, size // 10, size - size // 10, int(size * 1.2)), 0)
    return image


def _screenshot(rng: np.random.Generator, size: int) -> Image.Image:
    image = Image.new("RGB", (int(size * 1.6), size), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, image.width, 28), fill=(40, 60, 110))
    draw.rectangle((0, 28, 140, size), fill=(225, 228, 232))
    for i in range(int(rng.integers(2, 6))):
        x = 160 + i * 90
        draw.rectangle((x, 44, x + 80, 70), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    _text_lines(draw, rng, (160, 90, image.width - 20, size - 10), (20, 20, 20))
    _text_lines(draw, rng, (10, 40, 130, size - 10), (60, 60, 60))
    if rng.random() < 0.5:
        return image.convert("L")  # a greyscale screenshot: the grey-level and whiteness checks
    return image


def _noise(rng: np.random.Generator, size: int) -> Image.Image:
    array = rng.uniform(0, 255, (size, size)) if rng.random() < 0.5 else rng.normal(128, 40, (size, size))
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L")


def _gradient(rng: np.random.Generator, size: int) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size] / size
    if rng.random() < 0.5:
        angle = rng.uniform(0, np.pi)
        array = (np.cos(angle) * xx + np.sin(angle) * yy) * 255
    else:
        cx, cy = rng.uniform(0.2, 0.8, 2)
        array = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) * 255 * 1.4
    array = array + rng.normal(0, 2, (size, size))
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L")


def _grey_photo(rng: np.random.Generator, size: int) -> Image.Image:
    """A colour photo turned grey: the pixel checks pass it, only the feature distance can refuse it."""
    return _colour_photo(rng, size).convert("L")


GENERATORS = {
    "colour_photo": _colour_photo,
    "document": _document,
    "screenshot": _screenshot,
    "noise": _noise,
    "gradient": _gradient,
    "grey_photo": _grey_photo,
}


def render_dicom(path: str) -> Image.Image:
    """Frame 0 of a DICOM file as 8-bit (full range, MONOCHROME1 inverted, colour kept as RGB)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    if pixels.ndim == 3:  # colour (ultrasound, secondary capture)
        if str(getattr(ds, "PhotometricInterpretation", "")).startswith("YBR"):
            from pydicom.pixels import convert_color_space

            pixels = convert_color_space(pixels, ds.PhotometricInterpretation, "RGB")
        return Image.fromarray(np.asarray(pixels, dtype=np.uint8), "RGB")
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        scaled = 1.0 - scaled
    return Image.fromarray(np.rint(scaled * 255).astype(np.uint8), "L")


def dicom_images() -> list[NonChestImage]:
    from pydicom.data import get_testdata_file

    found = []
    for name in DICOM_FILES:
        path = get_testdata_file(name, download=False)
        if path is None:
            continue
        try:
            found.append(NonChestImage(kind="dicom", name=name, image=render_dicom(str(path))))
        except Exception:  # noqa: S112 - an undecodable test file (missing codec) is left out of the set
            continue
    return found


def build(*, per_kind: int = 20, size: int = 256, seed: int = 0, with_dicom: bool = True) -> list[NonChestImage]:
    """The non-chest set: `per_kind` images of each synthetic kind plus the DICOM renderings."""
    rng = np.random.default_rng(seed)
    images = [
        NonChestImage(kind=kind, name=f"{kind}-{i}", image=make(rng, size))
        for kind, make in GENERATORS.items()
        for i in range(per_kind)
    ]
    if with_dicom:
        images += dicom_images()
    return images
