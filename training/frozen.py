"""Train and ship a model with a frozen pretrained backbone: features once, a linear head, a card.

    python -m training.frozen xray --data ../shared/data --arch mobilenetv2 \
        --weights var/weights/mobilenetv2_imagenet_notop.weights.h5 --contrast equalize --border 0.1 \
        --augment --balance-within-source --name xray-mobilenetv2 --version 2.0.0 \
        --out ml/models/xray-mobilenetv2-2.0.0

On these 2-core CPU machines a pretrained backbone cannot be fine-tuned on thousands of images,
but frozen it gives features that generalise across hospitals better than a network learned from
scratch on confounded data. The model is build_model's network with the backbone's weights and
the fitted head dropped into its Dense layer, so the worker serves it like any other. Steps:
leave-one-source-out validation (training.crossval, same recipe), the final head on the training
split, temperature on the validation split, the test split touched once, the gate calibrated
from the same features, and a card led by the per-source table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
from pathlib import Path

import numpy as np

from ml.preprocessing import Preprocessing
from training import metrics as M
from training.architectures import ARCHITECTURES, build_model
from training.crossval import (
    Head,
    border_mass,
    dataset_labels,
    default_held_out,
    features_for,
    fit_calibrated_head,
    gradcam,
    leave_one_source_out,
)
from training.data import cap_training, discover
from training.pretrained import provenance_of
from training.report import write_card

logger = logging.getLogger("training")


def build_shipped_model(arch: str, n_classes: int, size: int, weights: Path, head: Head):
    """build_model's network with the pretrained backbone and the fitted head."""
    model = build_model(arch, n_classes=n_classes, input_size=size, weights_path=weights)
    model.get_layer("probabilities").set_weights([head.kernel.astype(np.float32), head.bias.astype(np.float32)])
    return model


def check_model_matches_head(model, images: np.ndarray, expected: np.ndarray, tolerance: float = 1e-3) -> float:
    """The saved network must give what the head gave on cached features (same preprocessing, same weights)."""
    got = np.asarray(model.predict_on_batch(images), dtype=np.float64)
    gap = float(np.abs(got - expected).max())
    if gap > tolerance:
        raise RuntimeError(f"the assembled model differs from the fitted head by {gap:.2e} (> {tolerance})")
    return gap


def train_frozen(args: argparse.Namespace) -> Path:
    started = time.time()
    arch = ARCHITECTURES[args.arch]
    size = args.size or arch.input_size
    spec = Preprocessing(size, size, arch.scale, args.contrast, args.border)
    dataset = cap_training(discover(args.data, args.modality), args.max_train_per_source_class, args.seed)
    classes = dataset.classes
    labels = dataset_labels(dataset)
    splits = np.array([s.split for s in dataset.samples])
    features, augmented = features_for(
        dataset, args.arch, spec, args.weights, args.cache, args.seed if args.augment else None
    )
    kwargs = {"balance": args.balance_within_source, "seed": args.seed, "input_size": size}

    held_out = default_held_out(dataset)
    if args.loso_json:
        folds = folds_from_crossval(args.loso_json, spec, args)
    else:
        folds = leave_one_source_out(dataset, features, augmented, held_out=held_out, **kwargs) if held_out else {}

    train_idx, val_idx, test_idx = (np.flatnonzero(splits == name) for name in ("train", "val", "test"))
    head, temperature = fit_calibrated_head(
        dataset, features, augmented, train_idx, val_idx, balance=args.balance_within_source, seed=args.seed
    )
    val_raw = head.probabilities(features.pooled[val_idx])
    test_raw = head.probabilities(features.pooled[test_idx])
    test_probs = M.apply_temperature(test_raw, temperature)
    test_border = border_mass(gradcam(features.maps[test_idx], head, test_raw), size)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = build_shipped_model(args.arch, len(classes), size, args.weights, head)
    from training.features import prepared

    probe = test_idx[:: max(1, len(test_idx) // 16)][:16]
    batch = np.stack([prepared(dataset.samples[i].path, spec, None) for i in probe]).astype(np.float32)
    gap = check_model_matches_head(model, batch, head.probabilities(features.pooled[probe]))
    model.save(out / "model.keras")

    test_samples = [dataset.samples[i] for i in test_idx]
    provenance = provenance_of(args.weights) if args.weights else None
    meta = {
        "format_version": 1,
        "name": args.name,
        "version": args.version,
        "modality": args.modality,
        "classes": classes,
        "preprocessing": spec.to_json(),
        "architecture": args.arch,
        "pretrained": True,
        "starting_point": f"frozen ImageNet backbone ({args.weights.name}) with a linear head trained here",
        "pretrained_weights": args.weights.name,
        "pretrained_source": provenance,
        "initialised_from": None,
        "calibration": {
            "temperature": temperature,
            "fitted_on": "validation split",
            "val_ece_before": M.expected_calibration_error(labels[val_idx], val_raw),
            "val_ece_after": M.expected_calibration_error(labels[val_idx], M.apply_temperature(val_raw, temperature)),
            "test_ece_before": M.expected_calibration_error(labels[test_idx], test_raw),
            "test_ece_after": M.expected_calibration_error(labels[test_idx], test_probs),
        },
        "shortcut_defences": {
            "contrast": args.contrast,
            "border_mask": args.border,
            "cue_augmentation": bool(args.augment),
            "balance_within_source": bool(args.balance_within_source),
        },
        "heatmap_border_mass_test": {"mean": float(test_border.mean()), "band": 0.1, "n": len(test_idx)},
        "external_validation": "leave one source out" if folds else "none",
        "leave_one_source_out": {"folds": folds, "notes": loso_notes(folds)} if folds else None,
        "training": {
            "data": str(args.data),
            "counts": dataset.counts(),
            "method": "frozen backbone features, weighted softmax regression (L-BFGS, L2 chosen on validation loss)",
            "max_train_per_source_class": args.max_train_per_source_class,
            "seed": args.seed,
            "loss_weights": "classes balanced overall and within each source"
            if args.balance_within_source
            else "classes balanced overall",
            "seconds": round(time.time() - started),
            "assembled_model_gap": gap,
        },
        "parameters": int(model.count_params()),
        "trained_on": dt.datetime.now(dt.UTC).date().isoformat(),
        "limitations": limitations(args.modality, folds),
        "recommended_status": "silent",
    }
    baselines = {}
    if not args.no_baselines:
        from training.baselines import source_prior_probs, thumbnail_logreg_probs

        train_samples = dataset.split("train")
        baselines["source prior"] = source_prior_probs(train_samples, test_samples, classes)
        baselines["16x16 thumbnail logistic regression"] = thumbnail_logreg_probs(train_samples, test_samples, classes)
    write_card(out, meta, test_samples, labels[test_idx], test_probs, n_bootstrap=args.bootstrap, baselines=baselines)

    from training.gate import calibrate as calibrate_gate

    calibrate_gate(
        out,
        dataset,
        seed=args.seed,
        precomputed={
            name: features.pooled[idx] for name, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx))
        },
    )
    from ml.export_onnx import convert_after_training

    convert_after_training(out)
    logger.info("Wrote %s in %.0f s", out, time.time() - started)
    return out


def folds_from_crossval(path: Path, spec: Preprocessing, args: argparse.Namespace) -> dict:
    """The folds of a `training.crossval` run of this exact recipe (saves re-fitting them)."""
    import json

    (run,) = json.loads(Path(path).read_text())
    recipe = (run["preprocessing"], run["augment"], run["balance_within_source"])
    if recipe != (spec.to_json(), bool(args.augment), bool(args.balance_within_source)):
        raise SystemExit(f"{path} was run with another recipe ({recipe}); run the folds again")
    return run["folds"]


def loso_notes(folds: dict) -> list[str]:
    notes = []
    for source, fold in folds.items():
        missing = fold.get("classes_not_trained") or []
        if missing:
            notes.append(
                f"With {source} held out, no training image of {', '.join(missing)} remained: that class cannot be "
                "recognised in this fold, as it could not be at a hospital unlike every source of that class."
            )
    failing = [
        source
        for source, fold in folds.items()
        if (fold.get("normals_called_normal") or {}).get("rate") is not None
        and fold["normals_called_normal"]["rate"] < 0.85
        and fold["gate_refused"]["rate"] < 0.1
    ]
    if failing:
        notes.append(
            f"The input gate accepted more than 90 % of the images of {', '.join(failing)} when held out, while the "
            "model called fewer than 85 % of their normals normal: the gate does not protect a new hospital "
            "from this model's errors; local validation does."
        )
    notes.append(
        "Grad-CAM mass is measured on the outer 10 % band only; burned-in text inside the image is not detected."
    )
    return notes


def limitations(modality: str, folds: dict) -> list[str]:
    items = [
        "Validated by leave-one-source-out on the public sources of ../shared/data only; no image from a hospital "
        "outside them, no prospective data, no lateral views, no children except kermany224's."
        if folds
        else "No external validation: one source of images only.",
        "The backbone is frozen (ImageNet features); only the last layer was trained here.",
        "Probabilities are calibrated on the validation split of the training sources; a new hospital's "
        "calibration can differ (see the leave-one-source-out ECE).",
        "Sources are confounded with labels; a department should run this model silently and compare it with "
        "its radiologists' signed reads before it is shown.",
    ]
    if modality == "xray":
        items.append("Tuberculosis comes from one hospital (nitrd_da, 44 training images): too little to trust.")
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modality", choices=["xray", "ct"])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="mobilenetv2")
    parser.add_argument("--size", type=int)
    parser.add_argument("--weights", type=Path, required=True, help="backbone weights (python -m training.pretrained)")
    parser.add_argument("--contrast", choices=["none", "equalize"], default="none")
    parser.add_argument("--border", type=float, default=0.0)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--balance-within-source", action="store_true")
    parser.add_argument("--max-train-per-source-class", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path("var/features"))
    parser.add_argument("--loso-json", type=Path, help="folds from a training.crossval run of the same recipe")
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train_frozen(parse_args(argv))


if __name__ == "__main__":
    main()
