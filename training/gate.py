"""Calibrate and measure a model's input gate, and write it into the model folder.

    python -m training.gate xray --model ml/models/xray-compact-1.0.0 --data ../shared/data

Feature statistics (class means, shared covariance of the penultimate layer) come from the
training split, the distance threshold from the validation split (a percentile: that share of
validation images passes), and the rejection rates of the whole gate (pixel checks plus distance)
are measured on the test split (should be low) and on a built set of non-chest images (should be
high, see training.nonchest). Writes gate.npz, a "gate" section in model.json and in CARD.md.
training.train runs this after every training.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from ml import gate
from ml.inference import features_batch
from ml.preprocessing import prepare
from ml.registry import ModelSpec, read_model_json, write_model_json
from training.data import Dataset, Sample, discover
from training.nonchest import build as build_nonchest
from training.report import gate_markdown
from training.train import subsample

logger = logging.getLogger("training")

DEFAULT_PERCENTILE = 99.0


def _features(spec: ModelSpec, images: list, batch_size: int) -> np.ndarray:
    """Penultimate features of images (paths or PIL images), prepared exactly as in production."""
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = np.stack([prepare(image, spec.preprocessing) for image in images[start : start + batch_size]])
        chunks.append(features_batch(spec, batch))
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


def _gate_all(
    spec: ModelSpec,
    images: list[Image.Image],
    calibration: gate.OodCalibration,
    batch_size: int,
    features: np.ndarray | None = None,
) -> list[str | None]:
    """The whole gate on each image, as the worker runs it without DICOM tags: each image's
    rejection code, or None when it would be classified. `features`: the images' penultimate
    features when already computed (training.frozen has them cached)."""
    codes: list[str | None] = []
    passed: list[tuple[int, Image.Image]] = []
    for image in images:
        verdict = gate.check_image(spec, image)
        codes.append(verdict.code)
        if verdict.accepted:
            passed.append((len(codes) - 1, image))
    if passed:
        if features is None:
            rows = _features(spec, [image for _, image in passed], batch_size)
        else:
            rows = features[[index for index, _ in passed]]
        for (index, _), row in zip(passed, rows, strict=True):
            codes[index] = gate.check_features(calibration, row).code
    return codes


def _rates(codes: list[str | None], groups: list[str] | None = None) -> dict:
    rejected = [code for code in codes if code is not None]
    result = {
        "n": len(codes),
        "rejected": len(rejected),
        "rate": len(rejected) / len(codes) if codes else None,
        "by_reason": dict(Counter(rejected)),
    }
    if groups is not None:
        result["by_kind"] = {
            kind: {
                "n": sum(1 for g in groups if g == kind),
                "rejected": sum(1 for g, c in zip(groups, codes, strict=True) if g == kind and c is not None),
            }
            for kind in dict.fromkeys(groups)
        }
    return result


def _open(sample: Sample) -> Image.Image:
    with Image.open(sample.path) as image:
        image.load()
        return image


def calibrate(
    folder: Path,
    dataset: Dataset,
    *,
    percentile: float = DEFAULT_PERCENTILE,
    batch_size: int = 32,
    nonchest_per_kind: int = 20,
    seed: int = 0,
    precomputed: dict[str, np.ndarray] | None = None,
) -> dict:
    """Fit, threshold and measure the gate of the model in `folder`; returns the "gate" section.

    `precomputed`: penultimate features of the "train", "val" and "test" splits (in the dataset's
    order), when the caller has them; otherwise the model computes them."""
    precomputed = precomputed or {}
    spec = ModelSpec.from_folder(folder)
    if spec.modality != dataset.modality:
        raise SystemExit(f"{folder} is a {spec.modality} model, the data asked for is {dataset.modality}")
    classes = list(spec.classes)

    def split(name: str) -> list[Sample]:
        return [s for s in dataset.split(name) if s.label in classes]

    train, val, test = split("train"), split("val"), split("test")
    if not train or not val:
        raise SystemExit("the gate needs images in the training and validation splits")
    logger.info("Gate: %d train / %d val / %d test images", len(train), len(val), len(test))

    def features_of(name: str, samples: list[Sample]) -> np.ndarray:
        known = precomputed.get(name)
        return known if known is not None else _features(spec, [s.path for s in samples], batch_size)

    train_features = features_of("train", train)
    labels = np.array([classes.index(s.label) for s in train])
    stats = gate.FeatureStats.fit(train_features, labels)
    val_scores = stats.score(features_of("val", val))
    threshold = float(np.percentile(val_scores, percentile))
    calibration = gate.OodCalibration(stats=stats, threshold=threshold, percentile=percentile)

    test_codes = _gate_all(spec, [_open(s) for s in test], calibration, batch_size, precomputed.get("test"))
    nonchest = build_nonchest(per_kind=nonchest_per_kind, seed=seed)
    nonchest_codes = _gate_all(spec, [item.image for item in nonchest], calibration, batch_size)

    section = {
        "method": "Mahalanobis distance of the penultimate-layer features to the nearest class mean "
        "(shared covariance, shrinkage 0.1), plus pixel checks (colour, grey levels, white page), "
        "image size and DICOM modality / view position",
        "file": gate.GATE_FILE,
        "threshold": threshold,
        "percentile": percentile,
        "feature_dim": int(train_features.shape[1]),
        "fitted_on": f"training split ({len(train)} images)",
        "threshold_on": f"validation split ({len(val)} images)",
        "val_rejection_rate": float(np.mean(val_scores > threshold)),
        "pixel_checks": {
            "colour_fraction_max": gate.COLOUR_FRACTION_MAX,
            "grey_levels_min": gate.GREY_LEVELS_MIN,
            "white_fraction_max": gate.WHITE_FRACTION_MAX,
            "mid_fraction_min": gate.MID_FRACTION_MIN,
            "min_side": gate.min_side(spec),
        },
        "test": _rates(test_codes),
        "nonchest": _rates(nonchest_codes, [item.kind for item in nonchest]),
    }
    stats.save(folder / gate.GATE_FILE, threshold=threshold)
    meta = read_model_json(folder / "model.json")
    meta["gate"] = section
    write_model_json(folder / "model.json", meta)
    _write_card_section(folder / "CARD.md", gate_markdown(meta))
    logger.info(
        "Gate threshold %.2f (p%g of val); rejects %.1f %% of the test split and %.1f %% of %d non-chest images",
        threshold,
        percentile,
        100 * (section["test"]["rate"] or 0),
        100 * (section["nonchest"]["rate"] or 0),
        section["nonchest"]["n"],
    )
    return section


def _write_card_section(card: Path, section: str) -> None:
    """Replace the card's "## Input gate" section (or add it): the rest of the card is untouched."""
    text = card.read_text() if card.is_file() else ""
    start = text.find("## Input gate")
    if start == -1:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1 :] if end != -1 else "")
    card.write_text(text.rstrip("\n") + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modality", choices=["xray", "ct"])
    parser.add_argument("--model", type=Path, required=True, help="model folder (model.keras + model.json)")
    parser.add_argument("--data", type=Path, required=True, help="manifest folder or Kaggle-layout folder")
    parser.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE, help="validation images passing")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-per-class", type=int, help="cap images per class and split (quick runs)")
    parser.add_argument("--nonchest-per-kind", type=int, default=20, help="synthetic images per kind")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    dataset = subsample(discover(args.data, args.modality), args.max_per_class, args.seed)
    return calibrate(
        args.model,
        dataset,
        percentile=args.percentile,
        batch_size=args.batch_size,
        nonchest_per_kind=args.nonchest_per_kind,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
