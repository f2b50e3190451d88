"""The input gate: refuse an image the model should not be trusted on, and say why.

Run in the worker before a prediction is stored. Each check is a simple measurement a user can
understand, compared with a threshold, and every measurement lands in the job's gate_scores:

- not a medical greyscale image: colour (share of clearly coloured pixels in the upload), too few
  grey levels (screenshots, drawings), or a mostly white page (documents);
- wrong modality: the DICOM Modality tag against the model's modality;
- lateral view: the DICOM ViewPosition tag (X-ray models are trained on frontal views);
- too small: the image's shorter side against the model's input (upscaling invents detail);
- out of distribution: the Mahalanobis distance of the model's penultimate-layer features to the
  nearest class mean of the training split, against a threshold set on the validation split and
  stored in the model folder (gate.npz and model.json "gate"). Models without that calibration
  skip only this check, and gate_scores says so.

No TensorFlow here: numpy and Pillow only, so the training CLI and the tests use the same code.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ml.preprocessing import load_grey
from ml.registry import ModelSpec

GATE_FILE = "gate.npz"

# Rejection codes: the values of diagnosis.models.InferenceJob.Rejection (ml does not import Django).
NOT_MEDICAL = "not_medical"
WRONG_MODALITY = "wrong_modality"
LATERAL_VIEW = "lateral_view"
TOO_SMALL = "too_small"
OUT_OF_DISTRIBUTION = "out_of_distribution"

# A pixel is "coloured" when its channels differ by more than this (of 255): JPEG noise on a grey
# radiograph stays well below it, a photo's skin, sky or foliage well above.
CHROMA_MIN = 40
# Share of coloured pixels above which the upload is a colour picture, not a radiograph.
COLOUR_FRACTION_MAX = 0.05
# A grey level "counts" when it holds at least this share of the pixels.
LEVEL_SHARE_MIN = 0.001
# Radiographs use a broad range of grey levels (at least 61 in 1,200 images of the training data);
# screenshots, drawings and text pages few (34-45 in the synthetic ones, anti-aliased text included).
GREY_LEVELS_MIN = 48
# A page or a screen: mostly near-white (>= 245) with hardly any mid-tones (32..223) between the
# background and the ink. A CT in a lung window can be mostly white too, but keeps its mid-tones.
WHITE_FRACTION_MAX = 0.5
WHITE_LEVEL = 245
MID_FRACTION_MIN = 0.2
MID_LEVELS = (32, 224)

MODALITY_TAGS = {
    # DICOM Modality values each of our model modalities reads.
    "xray": {"CR", "DX", "DR", "RG"},
    "ct": {"CT"},
}
MODALITY_NAMES = {"xray": "X-ray", "ct": "CT"}
# ViewPosition values of a lateral projection (PS3.3 C.8.11.5 defined terms, plus free text seen in the wild).
LATERAL_POSITIONS = {"LL", "RL", "LAT", "LATERAL", "LLAT", "RLAT"}


@dataclass(frozen=True)
class Verdict:
    """The gate's answer for one image: `code` is None when the image may be classified."""

    code: str | None
    reason: str = ""
    scores: dict = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.code is None


def _open_rgb(source: Image.Image) -> Image.Image:
    image = source
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def image_measures(image: Image.Image, *, grey: Image.Image | None = None) -> dict:
    """Colour, grey-level and whiteness measurements of an upload (the original pixels); `grey`:
    load_grey(image) when the caller has it already."""
    measures: dict = {"width": image.width, "height": image.height}
    if image.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV"):
        thumb = _open_rgb(image).copy()
        thumb.thumbnail((256, 256))
        rgb = np.asarray(thumb, dtype=np.int16)
        chroma = rgb.max(axis=2) - rgb.min(axis=2)
        measures["colour_fraction"] = round(float(np.mean(chroma > CHROMA_MIN)), 4)
    else:
        measures["colour_fraction"] = 0.0
    grey = load_grey(image) if grey is None else grey
    histogram = np.asarray(grey.histogram(), dtype=np.float64)
    shares = histogram / max(histogram.sum(), 1.0)
    measures["grey_levels"] = int(np.sum(shares >= LEVEL_SHARE_MIN))
    measures["white_fraction"] = round(float(shares[WHITE_LEVEL:].sum()), 4)
    measures["mid_fraction"] = round(float(shares[MID_LEVELS[0] : MID_LEVELS[1]].sum()), 4)
    return measures


def _not_medical(measures: dict) -> str | None:
    if measures["colour_fraction"] > COLOUR_FRACTION_MAX:
        return (
            f"This looks like a colour picture, not a radiograph: {measures['colour_fraction']:.0%} of its pixels "
            f"are clearly coloured (a greyscale X-ray or CT has almost none; the limit is {COLOUR_FRACTION_MAX:.0%})."
        )
    if measures["grey_levels"] < GREY_LEVELS_MIN:
        return (
            f"This looks like a screenshot, drawing or document, not a radiograph: it uses only "
            f"{measures['grey_levels']} grey levels (a radiograph uses at least {GREY_LEVELS_MIN})."
        )
    if measures["white_fraction"] > WHITE_FRACTION_MAX and measures["mid_fraction"] < MID_FRACTION_MIN:
        return (
            f"This looks like a document or a screen, not a radiograph: {measures['white_fraction']:.0%} of it is "
            f"near-white background and only {measures['mid_fraction']:.0%} is mid-grey (a radiograph is mostly "
            "mid-grey)."
        )
    return None


def min_side(spec: ModelSpec) -> int:
    """The smallest shorter side the model accepts: a third of its input side (more upscaling than
    that invents the detail the model looks for), unless model.json "gate" sets "min_side"."""
    configured = (spec.card.get("gate") or {}).get("min_side")
    if configured:
        return int(configured)
    return math.ceil(min(spec.preprocessing.width, spec.preprocessing.height) / 3)


def check_image(
    spec: ModelSpec, image: Image.Image | None, *, dicom: dict | None = None, measures: dict | None = None
) -> Verdict:
    """The checks before the model runs: DICOM tags, size and the picture's own statistics.

    `measures`: image_measures of the upload, taken when it was decoded at upload time (the
    worker then need not decode it again); `image` is read only without them.
    """
    dicom = dicom or {}
    scores: dict = {}
    tag = str(dicom.get("modality") or "").upper()
    if tag:
        scores["dicom_modality"] = tag
        if tag not in MODALITY_TAGS[spec.modality]:
            expected = MODALITY_NAMES[spec.modality]
            return Verdict(
                WRONG_MODALITY,
                f"The DICOM file says its modality is {tag}, but this model reads {expected} images "
                f"({', '.join(sorted(MODALITY_TAGS[spec.modality]))}). Upload it to a case of the right modality.",
                scores,
            )
    view = str(dicom.get("view_position") or "").upper().strip()
    if view:
        scores["view_position"] = view
        if spec.modality == "xray" and view in LATERAL_POSITIONS:
            return Verdict(
                LATERAL_VIEW,
                f"The DICOM file says this is a lateral view ({view}). The model was trained on frontal "
                "(PA/AP) chest X-rays only; upload the frontal image of the study.",
                scores,
            )
    measures = image_measures(image) if measures is None else measures
    scores.update(measures)
    needed = min_side(spec)
    scores["min_side"] = needed
    shorter = min(measures["width"], measures["height"])
    if shorter < needed:
        return Verdict(
            TOO_SMALL,
            f"The image is too small for the model: its shorter side is {shorter} pixels; the model needs at "
            f"least {needed} (its input is {spec.preprocessing.width}x{spec.preprocessing.height}).",
            scores,
        )
    reason = _not_medical(measures)
    if reason:
        return Verdict(NOT_MEDICAL, reason, scores)
    return Verdict(None, "", scores)


# Out-of-distribution check -------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureStats:
    """Class means and a shared (shrunk) precision matrix of penultimate-layer features."""

    means: np.ndarray  # (classes, d)
    precision: np.ndarray  # (d, d)

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, shrinkage: float = 0.1) -> FeatureStats:
        """Tied-covariance Gaussian per class (Lee et al. 2018), shrunk toward a scaled identity so
        the precision exists even with fewer images than feature dimensions."""
        features = np.asarray(features, dtype=np.float64)
        classes = sorted(set(int(y) for y in labels))
        means = np.stack([features[labels == k].mean(axis=0) for k in classes])
        centred = features - means[np.searchsorted(classes, labels)]
        cov = centred.T @ centred / max(len(features) - 1, 1)
        d = cov.shape[0]
        scale = float(np.trace(cov)) / d or 1.0
        cov = (1.0 - shrinkage) * cov + shrinkage * scale * np.eye(d)
        return cls(means=means.astype(np.float32), precision=np.linalg.pinv(cov).astype(np.float32))

    @functools.cached_property
    def _quadratic(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(P, U, c) in float64 with U = means P + means P^T and c_k = m_k P m_k^T: then
        (x - m_k) P (x - m_k)^T = x P x^T - x . U_k + c_k, one matrix product per batch instead of
        one per class after a copy of P (26 ms an image at 1280 features; now about 1 ms)."""
        precision = self.precision.astype(np.float64)
        means = self.means.astype(np.float64)
        both = means @ precision + means @ precision.T
        constant = np.sum((means @ precision) * means, axis=1)
        return precision, both, constant

    def score(self, features: np.ndarray) -> np.ndarray:
        """Distance (Mahalanobis, to the nearest class mean) of each feature row; larger is stranger."""
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        precision, both, constant = self._quadratic
        squared = np.sum((x @ precision) * x, axis=1, keepdims=True) - x @ both.T + constant
        return np.sqrt(np.maximum(squared.min(axis=1), 0.0))

    def save(self, path: Path, *, threshold: float) -> None:
        np.savez_compressed(path, means=self.means, precision=self.precision, threshold=np.float64(threshold))


@dataclass(frozen=True)
class OodCalibration:
    stats: FeatureStats
    threshold: float
    percentile: float

    @classmethod
    def load(cls, spec: ModelSpec) -> OodCalibration | None:
        """The model's calibration, or None (the tiny test models, models trained before the gate).
        Cached per file and modification time: a worker reads it once, and again after a recalibration."""
        section = spec.card.get("gate") or {}
        path = spec.folder / GATE_FILE
        if "threshold" not in section or not path.is_file():
            return None
        key = (path.stat().st_mtime_ns, float(section["threshold"]), float(section.get("percentile", 0)))
        cached = _calibrations.get(path)
        if cached is None or cached[0] != key:
            with np.load(path) as data:
                stats = FeatureStats(means=data["means"], precision=data["precision"])
            cached = (key, cls(stats=stats, threshold=key[1], percentile=key[2]))
            _calibrations[path] = cached
        return cached[1]


_calibrations: dict[Path, tuple[tuple, OodCalibration]] = {}


def check_features(calibration: OodCalibration | None, features: np.ndarray) -> Verdict:
    """The check after the forward pass: how far the image's features lie from the training images'."""
    if calibration is None:
        return Verdict(None, "", {"ood": "skipped: the model has no gate calibration"})
    distance = float(calibration.stats.score(features)[0])
    scores = {"ood_distance": round(distance, 3), "ood_threshold": round(calibration.threshold, 3)}
    if distance > calibration.threshold:
        return Verdict(
            OUT_OF_DISTRIBUTION,
            f"The image is unlike the images the model was trained on (feature distance {distance:.1f}; "
            f"{calibration.percentile:g} % of the validation images score at most {calibration.threshold:.1f}). "
            "It may not be a frontal chest image of the kind the model knows; a radiologist should read it.",
            scores,
        )
    return Verdict(None, "", scores)
