"""Leave-one-source-out validation: the figure that predicts a new hospital.

    python -m training.crossval xray --data ../shared/data --weights var/weights/mobilenetv2_imagenet_notop.weights.h5 \
        --contrast equalize --border 0.1 --augment --balance-within-source --out benchmarks/results/loso/xray.json

A test split that shares hospitals with training rewards a model for recognising the hospital.
Here each source in turn is held out entirely: a head is trained on frozen-backbone features of
the other sources' training split (early stopping and temperature on their validation split;
never on the held-out source) and scored on every image of the held-out source. Reported per
held-out source: normals called normal, COVID-19, pneumonia and tuberculosis sensitivity (Wilson
95 % intervals), expected calibration error, the input gate's refusal rate (its feature statistics
fitted without the source) and the share of Grad-CAM mass on the outer 10 % border.

`--defences` runs the same folds for each shortcut defence on and off (training.shortcuts,
ml.preprocessing) and writes the comparison table for the README.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.preprocessing import Preprocessing
from training import metrics as M
from training.architectures import ARCHITECTURES
from training.data import Dataset, cap_training, discover
from training.features import Features, extract

logger = logging.getLogger("training")

BORDER_FRACTION = 0.1  # the band whose Grad-CAM share is reported: where text and markers sit
DEFAULT_HELD_OUT = {"xray": ["covid19rad224", "nitrd_da", "nih14", "ieee8023", "kermany224"]}


def default_held_out(dataset: Dataset) -> list[str]:
    """The sources to hold out: the issue's list where present (sources with normals, COVID sources,
    then the pediatric one), else every source; none when there is only one source to train on."""
    present = sorted({s.source for s in dataset.samples})
    if len(present) < 2:
        return []
    preferred = [s for s in DEFAULT_HELD_OUT.get(dataset.modality, []) if s in present]
    return preferred or present


# Head ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """A dense softmax on pooled features: kernel (channels, classes) and bias, as build_model's last layer."""

    kernel: np.ndarray
    bias: np.ndarray

    def probabilities(self, pooled: np.ndarray) -> np.ndarray:
        logits = pooled.astype(np.float64) @ self.kernel + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


def fit_head(
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    n_classes: int,
    *,
    x_val: np.ndarray,
    y_val: np.ndarray,
    seed: int = 0,
    l2: float = 1e-3,
    label_smoothing: float = 0.05,
) -> Head:
    """Weighted softmax regression (L-BFGS), its L2 strength chosen on the validation loss.

    Full-batch and deterministic: seconds on a busy CPU where an epoch loop of small steps took
    minutes. Features are standardised for the optimiser and the scaling is folded back into the
    kernel, so the head drops into build_model's Dense layer unchanged. `seed` is kept for the
    callers' records; nothing here is random."""
    from scipy.optimize import minimize

    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    xs, xv = (x - mean) / std, (x_val - mean) / std
    targets = np.full((len(y), n_classes), label_smoothing / n_classes)
    targets[np.arange(len(y)), y] += 1.0 - label_smoothing
    w = weights / weights.sum()
    d = xs.shape[1]

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return theta[: d * n_classes].reshape(d, n_classes), theta[d * n_classes :]

    def softmax(logits: np.ndarray) -> np.ndarray:
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def val_loss(kernel: np.ndarray, bias: np.ndarray) -> float:
        p = softmax(xv @ kernel + bias)
        return float(-np.mean(np.log(np.clip(p[np.arange(len(y_val)), y_val], 1e-12, 1.0))))

    best = None
    for strength in (l2 * 10, l2, l2 / 10):

        def objective(theta: np.ndarray, strength: float = strength) -> tuple[float, np.ndarray]:
            kernel, bias = unpack(theta)
            p = softmax(xs @ kernel + bias)
            loss = -np.sum(w[:, None] * targets * np.log(np.clip(p, 1e-12, 1.0))) + strength * np.sum(kernel**2)
            grad_logits = w[:, None] * (p - targets)
            grad_kernel = xs.T @ grad_logits + 2 * strength * kernel
            return float(loss), np.concatenate([grad_kernel.ravel(), grad_logits.sum(axis=0)])

        theta = minimize(objective, np.zeros(d * n_classes + n_classes), jac=True, method="L-BFGS-B",
                         options={"maxiter": 500}).x  # fmt: skip
        kernel, bias = unpack(theta)
        loss = val_loss(kernel, bias)
        if best is None or loss < best[0]:
            best = (loss, kernel, bias)
    _, kernel, bias = best
    folded_kernel = kernel / std[:, None]
    return Head(kernel=folded_kernel, bias=bias - mean @ folded_kernel)


# Heatmaps --------------------------------------------------------------------------------------


def gradcam(maps: np.ndarray, head: Head, probs: np.ndarray) -> np.ndarray:
    """The worker's Grad-CAM (gradient of the top class's log-probability) for a pooling + dense head,
    without a backward pass: d log p_c / d map = (w_c - sum_j p_j w_j) / (h w) at every position."""
    top = probs.argmax(axis=1)
    weights = head.kernel[:, top].T - probs @ head.kernel.T  # (n, channels)
    return np.maximum(np.einsum("nhwc,nc->nhw", maps.astype(np.float32), weights.astype(np.float32)), 0.0)


def border_mass(cams: np.ndarray, size: int, fraction: float = BORDER_FRACTION) -> np.ndarray:
    """Share of each heatmap's mass in the outer band, after the worker's bilinear upsampling to the input size."""
    from PIL import Image

    band = max(1, round(size * fraction))
    inner = np.zeros((size, size), dtype=bool)
    inner[band:-band, band:-band] = True
    shares = np.zeros(len(cams))
    for i, cam in enumerate(cams):
        up = np.asarray(
            Image.fromarray(cam.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR)
        )
        up = np.maximum(up, 0.0)
        total = float(up.sum())
        shares[i] = float(up[~inner].sum()) / total if total > 0 else 0.0
    return shares


# Folds -----------------------------------------------------------------------------------------


def wilson(successes: int, n: int) -> list[float] | None:
    """Wilson score 95 % interval of a proportion (sound at small n and at 0 % or 100 %)."""
    if n == 0:
        return None
    z = 1.959963984540054
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def _rate(hits: np.ndarray) -> dict:
    n, k = int(len(hits)), int(np.sum(hits))
    return {"n": n, "rate": k / n if n else None, "ci95": wilson(k, n)}


def heldout_metrics(
    classes: list[str], y: np.ndarray, probs: np.ndarray, border: np.ndarray, refused: np.ndarray
) -> dict:
    """What a new hospital would see: per-class recall of the source's own classes, calibration, gate, heatmaps."""
    predicted = probs.argmax(axis=1)
    result = {"n": int(len(y)), "per_class": {}}
    for k, label in enumerate(classes):
        mask = y == k
        if mask.any():
            result["per_class"][label] = _rate(predicted[mask] == k)
    if "normal" in classes:
        result["normals_called_normal"] = result["per_class"].get("normal")
    for label in ("covid", "pneumonia", "tuberculosis"):
        if label in result["per_class"]:
            result[f"{label}_sensitivity"] = result["per_class"][label]
    result["accuracy"] = float((predicted == y).mean())
    result["ece"] = M.expected_calibration_error(y, probs)
    result["gate_refused"] = _rate(refused)
    result["border_mass_mean"] = float(border.mean())
    return result


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Each sample's class index, in the dataset's order (the order of its cached features)."""
    return np.array([dataset.classes.index(s.label) for s in dataset.samples])


def fit_calibrated_head(
    dataset: Dataset,
    features: Features,
    augmented: Features | None,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    *,
    balance: bool,
    seed: int,
) -> tuple[Head, float]:
    """The recipe's head on the training indices (plus their cue-augmented copies) and its
    temperature on the validation indices: what every fold and the shipped model are fitted by."""
    from training.train import sample_weights

    labels = dataset_labels(dataset)
    x, y = features.pooled[train_idx], labels[train_idx]
    w = sample_weights(y, [dataset.samples[i].source for i in train_idx], len(dataset.classes), within_source=balance)
    if augmented is not None:  # the same images once more, with hospital cues drawn on every class
        x = np.concatenate([x, augmented.pooled[train_idx]])
        y, w = np.concatenate([y, y]), np.concatenate([w, w])
    head = fit_head(x, y, w, len(dataset.classes), x_val=features.pooled[val_idx], y_val=labels[val_idx], seed=seed)
    temperature = M.fit_temperature(labels[val_idx], head.probabilities(features.pooled[val_idx]))
    return head, temperature


def run_fold(
    dataset: Dataset,
    features: Features,
    augmented: Features | None,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    test_idx: np.ndarray,
    *,
    balance: bool,
    seed: int,
    input_size: int,
) -> tuple[Head, float, dict]:
    """Fit a head (and temperature, gate statistics) on train/val indices; score the test indices."""
    from ml.gate import FeatureStats

    classes = dataset.classes
    labels = dataset_labels(dataset)
    head, temperature = fit_calibrated_head(
        dataset, features, augmented, train_idx, val_idx, balance=balance, seed=seed
    )
    raw = head.probabilities(features.pooled[test_idx])
    probs = M.apply_temperature(raw, temperature)
    stats = FeatureStats.fit(features.pooled[train_idx], labels[train_idx])
    threshold = float(np.percentile(stats.score(features.pooled[val_idx]), 99.0))
    refused = stats.score(features.pooled[test_idx]) > threshold
    border = border_mass(gradcam(features.maps[test_idx], head, raw), input_size)
    return head, temperature, heldout_metrics(classes, labels[test_idx], probs, border, refused)


def leave_one_source_out(
    dataset: Dataset,
    features: Features,
    augmented: Features | None = None,
    *,
    held_out: list[str] | None = None,
    balance: bool = True,
    seed: int = 0,
    input_size: int = 224,
) -> dict:
    """One fold per held-out source (each needs two or more other sources to train on)."""
    sources = np.array([s.source for s in dataset.samples])
    splits = np.array([s.split for s in dataset.samples])
    folds = {}
    for source in held_out or sorted(set(sources)):
        if source not in set(sources):
            logger.warning("No images of source %s: fold skipped", source)
            continue
        others = sources != source
        train_idx = np.flatnonzero(others & (splits == "train"))
        val_idx = np.flatnonzero(others & (splits == "val"))
        test_idx = np.flatnonzero(~others)
        _, _, result = run_fold(
            dataset,
            features,
            augmented,
            train_idx,
            val_idx,
            test_idx,
            balance=balance,
            seed=seed,
            input_size=input_size,
        )
        result["classes_not_trained"] = [
            c for c in dataset.classes if not any(dataset.samples[i].label == c for i in train_idx)
        ]
        folds[source] = result
        logger.info("held out %s: %s", source, summary_line(result))
    return folds


def test_split_border_mass(dataset: Dataset, features: Features, augmented: Features | None, **kwargs) -> dict:
    """The standard split (train -> test, all sources): heatmap border share and accuracy on the test split."""
    splits = np.array([s.split for s in dataset.samples])
    _, _, result = run_fold(
        dataset,
        features,
        augmented,
        np.flatnonzero(splits == "train"),
        np.flatnonzero(splits == "val"),
        np.flatnonzero(splits == "test"),
        **kwargs,
    )
    return result


def summary_line(result: dict) -> str:
    parts = []
    for key in ("normals_called_normal", "covid_sensitivity", "pneumonia_sensitivity", "tuberculosis_sensitivity"):
        if result.get(key):
            parts.append(f"{key} {result[key]['rate']:.1%} (n={result[key]['n']})")
    parts.append(f"ECE {result['ece']:.3f}")
    parts.append(f"gate refused {result['gate_refused']['rate']:.1%}")
    parts.append(f"border mass {result['border_mass_mean']:.1%}")
    return ", ".join(parts)


# Markdown --------------------------------------------------------------------------------------


def _cell(rate: dict | None) -> str:
    if not rate or rate.get("rate") is None:
        return "–"
    low, high = rate["ci95"]
    return f"{rate['rate'] * 100:.1f} % ({low * 100:.0f}–{high * 100:.0f}, n={rate['n']})"


def loso_markdown(folds: dict) -> str:
    """The per-source table model cards lead with."""
    lines = [
        "| held-out source | images | normals called normal | COVID-19 sensitivity | pneumonia sensitivity "
        "| TB sensitivity | ECE | gate refused | Grad-CAM on border |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for source, r in folds.items():
        untrained = r.get("classes_not_trained") or []
        tb = "not trained (only source)" if "tuberculosis" in untrained else _cell(r.get("tuberculosis_sensitivity"))
        lines.append(
            f"| {source} | {r['n']} | {_cell(r.get('normals_called_normal'))} | {_cell(r.get('covid_sensitivity'))} "
            f"| {_cell(r.get('pneumonia_sensitivity'))} | {tb} | {r['ece']:.3f} "
            f"| {_cell(r['gate_refused'])} | {r['border_mass_mean'] * 100:.1f} % |"
        )
    return "\n".join(lines)


# Command ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    contrast: str
    border: float
    augment: bool
    balance: bool


DEFENCES = (
    Variant("none (plain resize, class weights only)", "none", 0.0, False, False),
    Variant("balance within source", "none", 0.0, False, True),
    Variant("+ histogram equalisation", "equalize", 0.0, False, True),
    Variant("+ border mask 10 %", "none", 0.1, False, True),
    Variant("+ equalisation and border mask", "equalize", 0.1, False, True),
    Variant("+ equalisation, border mask and cue augmentation", "equalize", 0.1, True, True),
)


def variant_name(contrast: str, border: float, augment: bool, balance: bool) -> str:
    """The defence table's row name for a set of flags."""
    match = [
        v for v in DEFENCES if (v.contrast, v.border, v.augment, v.balance) == (contrast, border, augment, balance)
    ]
    return match[0].name if match else f"contrast {contrast}, border {border}, augment {augment}, balance {balance}"


def features_for(
    dataset: Dataset, arch: str, spec: Preprocessing, weights: Path | None, cache: Path | None, augment_seed: int | None
) -> tuple[Features, Features | None]:
    """Features of every image, and with augment_seed a cue-augmented copy of the training split's
    (zeros elsewhere: only training images are ever augmented)."""
    common = {"arch": arch, "spec": spec, "weights": weights, "cache_dir": cache}
    features = extract(dataset.samples, **common)
    if augment_seed is None:
        return features, None
    train_idx = np.array([i for i, s in enumerate(dataset.samples) if s.split == "train"])
    train_aug = extract([dataset.samples[i] for i in train_idx], **common, augment_seed=augment_seed)
    pooled = np.zeros_like(features.pooled)
    maps = np.zeros_like(features.maps)
    pooled[train_idx], maps[train_idx] = train_aug.pooled, train_aug.maps
    return features, Features(pooled=pooled, maps=maps)


def run_variant(dataset: Dataset, args: argparse.Namespace, variant: Variant) -> dict:
    size = args.size or ARCHITECTURES[args.arch].input_size
    spec = Preprocessing(size, size, ARCHITECTURES[args.arch].scale, variant.contrast, variant.border)
    seed = args.seed if variant.augment else None
    features, augmented = features_for(dataset, args.arch, spec, args.weights, args.cache, seed)
    kwargs = {"balance": variant.balance, "seed": args.seed, "input_size": size}
    folds = leave_one_source_out(dataset, features, augmented, held_out=args.held_out, **kwargs)
    test = test_split_border_mass(dataset, features, augmented, **kwargs)
    return {"variant": variant.name, "preprocessing": spec.to_json(), "augment": variant.augment,
            "balance_within_source": variant.balance, "folds": folds, "test_split": test}  # fmt: skip


def defences_markdown(results: list[dict]) -> str:
    sources = list(results[0]["folds"])
    header = " | ".join(f"{s} held out: normals / COVID / pneumonia" for s in sources)
    lines = [f"| defence | {header} | mean ECE | Grad-CAM on border (test split) | test accuracy |",
             "|---" * (len(sources) + 4) + "|"]  # fmt: skip

    def short(rate: dict | None) -> str:
        return "–" if not rate or rate.get("rate") is None else f"{rate['rate'] * 100:.0f}"

    for r in results:
        cells = [
            " / ".join(short(f.get(k)) for k in ("normals_called_normal", "covid_sensitivity", "pneumonia_sensitivity"))
            for f in r["folds"].values()
        ]
        ece = np.mean([f["ece"] for f in r["folds"].values()])
        test = r["test_split"]
        lines.append(
            f"| {r['variant']} | {' | '.join(cells)} | {ece:.3f} | {test['border_mass_mean'] * 100:.1f} % "
            f"| {test['accuracy'] * 100:.1f} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modality", choices=["xray", "ct"])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="mobilenetv2")
    parser.add_argument("--size", type=int)
    parser.add_argument("--weights", type=Path, help="backbone weights (training.pretrained); none: random")
    parser.add_argument("--contrast", choices=["none", "equalize"], default="none")
    parser.add_argument("--border", type=float, default=0.0)
    parser.add_argument("--augment", action="store_true", help="add a cue-augmented copy of each training image")
    parser.add_argument("--balance-within-source", action="store_true")
    parser.add_argument("--defences", action="store_true", help="run every defence variant and write the table")
    parser.add_argument("--held-out", nargs="+", help="sources to hold out (default: all with a fold)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-train-per-source-class", type=int, default=500,
                        help="training images kept per source and class (cap_training); 0: all")  # fmt: skip
    parser.add_argument("--cache", type=Path, default=Path("var/features"), help="feature cache folder")
    parser.add_argument("--out", type=Path, required=True, help="JSON file; a .md table is written beside it")
    parser.add_argument("--table", nargs="+", type=Path, help="only print the defence table of earlier runs' JSON")
    args = parser.parse_args(argv)
    if args.table:
        results = [run for path in args.table for run in json.loads(path.read_text())]
        table = defences_markdown(results)
        args.out.write_text(table + "\n")
        print(table)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    dataset = cap_training(discover(args.data, args.modality), args.max_train_per_source_class, args.seed)
    args.held_out = args.held_out or default_held_out(dataset)
    if args.defences:
        results = [run_variant(dataset, args, variant) for variant in DEFENCES]
        table = defences_markdown(results)
    else:
        flags = (args.contrast, args.border, args.augment, args.balance_within_source)
        variant = Variant(variant_name(*flags), *flags)
        results = [run_variant(dataset, args, variant)]
        table = loso_markdown(results[0]["folds"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
