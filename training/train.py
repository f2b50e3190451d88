"""Train one model and write a complete model folder (model.keras, model.json, figures).

    python -m training.train xray --data ../shared/data --arch compact --epochs 30 \
        --out ml/models/xray-compact-1.0.0

Backend-agnostic Keras 3: set KERAS_BACKEND=jax on a GPU machine, tensorflow on a CPU one.
The test split is touched once, after training and calibration.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import time
from pathlib import Path

import keras
import numpy as np

from ml.preprocessing import Preprocessing
from training import metrics as M
from training.architectures import ARCHITECTURES, build_model, set_batch_norm_momentum
from training.data import Dataset, discover
from training.images import augment, load_split, to_model_batch
from training.report import write_card

logger = logging.getLogger("training")


class AugmentedBatches(keras.utils.PyDataset):
    def __init__(self, images, labels, weights, n_classes, batch_size, scale_max, seed):
        super().__init__()
        self.images, self.labels, self.weights = images, labels, weights
        self.n_classes, self.batch_size, self.scale_max = n_classes, batch_size, scale_max
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(labels))

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int):
        idx = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        batch = augment(self.images[idx], self.rng, self.scale_max)
        return to_model_batch(batch), keras.utils.to_categorical(self.labels[idx], self.n_classes), self.weights[idx]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.labels))


def predict(model: keras.Model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    out = [
        np.asarray(model.predict_on_batch(to_model_batch(images[i : i + batch_size])))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out).astype(np.float64)


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    counts = np.bincount(labels, minlength=n_classes)
    return {k: float(len(labels) / (n_classes * counts[k])) for k in range(n_classes) if counts[k]}


def sample_weights(
    labels: np.ndarray, sources: list[str], n_classes: int, *, within_source: bool, cap: float = 10.0
) -> np.ndarray:
    """Per-image loss weights: classes balanced overall, and optionally within each source.

    Class weights alone leave a source's own classes unbalanced: the 44 tuberculosis films of one
    hospital outweigh its 44 normals about twenty to one, so "this hospital" becomes the tuberculosis
    feature. Within-source balancing gives each class of a source an equal share of that source's
    weight, so only what differs inside the source can lower the loss. Weights are capped (a dozen
    images must not dominate) and scaled to mean 1.
    """
    per_class = class_weights(labels, n_classes)
    weights = np.array([per_class[int(label)] for label in labels], dtype=np.float64)
    if within_source:
        source_array = np.asarray(sources)
        for source in set(sources):
            in_source = source_array == source
            source_labels = labels[in_source]
            present = np.unique(source_labels)
            share = weights[in_source].sum() / len(present)
            source_weights = weights[in_source]
            for label in present:
                source_weights[source_labels == label] = share / np.sum(source_labels == label)
            weights[in_source] = source_weights
        weights = np.minimum(weights, cap * np.median(weights))
    return (weights / weights.mean()).astype(np.float32)


def initialise_from(model: keras.Model, folder: Path) -> int:
    """Copy a trained model's weights into a new one of the same architecture, except the classifier.

    Transfer learning without a download: a CT model can start from the chest X-ray model's
    features. Layers are paired in order (names differ between Keras sessions) and must match in
    type and weight shapes; returns how many layers were copied.
    """
    source = keras.saving.load_model(Path(folder) / "model.keras", compile=False)
    source_layers = [layer for layer in source.layers if layer.weights][:-1]
    target_layers = [layer for layer in model.layers if layer.weights][:-1]
    if len(source_layers) != len(target_layers):
        raise ValueError(f"{folder} has a different architecture ({len(source_layers)} vs {len(target_layers)} layers)")
    for src, dst in zip(source_layers, target_layers, strict=True):
        src_shapes = [tuple(w.shape) for w in src.get_weights()]
        if type(src) is not type(dst) or src_shapes != [tuple(w.shape) for w in dst.get_weights()]:
            raise ValueError(f"{folder}: layer {src.name} does not match {dst.name}")
        dst.set_weights(src.get_weights())
    return len(target_layers)


def subsample(dataset: Dataset, max_per_class: int | None, seed: int) -> Dataset:
    if not max_per_class:
        return dataset
    rng = np.random.default_rng(seed)
    kept = []
    for split in ("train", "val", "test"):
        for label in dataset.classes:
            group = [s for s in dataset.split(split) if s.label == label]
            if len(group) > max_per_class:
                group = [group[i] for i in sorted(rng.choice(len(group), max_per_class, replace=False))]
            kept.extend(group)
    return Dataset(modality=dataset.modality, classes=dataset.classes, samples=kept)


def train(args: argparse.Namespace) -> Path:
    keras.utils.set_random_seed(args.seed)
    dataset = subsample(discover(args.data, args.modality), args.max_per_class, args.seed)
    arch = ARCHITECTURES[args.arch]
    size = args.size or arch.input_size
    spec = Preprocessing(width=size, height=size, scale=arch.scale)
    scale_max = 255.0 if spec.scale == "raw" else 1.0
    classes = dataset.classes
    logger.info("Classes %s; counts %s", classes, dataset.counts())

    started = time.time()
    x_train, y_train = load_split(dataset.split("train"), classes, spec)
    x_val, y_val = load_split(dataset.split("val"), classes, spec)
    logger.info("Loaded %d train / %d val images in %.0f s", len(y_train), len(y_val), time.time() - started)

    model = build_model(args.arch, n_classes=len(classes), input_size=size, weights_path=args.weights)
    if args.init_from:
        logger.info("Initialised %d layers from %s", initialise_from(model, args.init_from), args.init_from)
    if not args.weights:  # ImageNet statistics are already settled; ours are not
        set_batch_norm_momentum(model, args.bn_momentum)
    n_classes = len(classes)
    w_train = sample_weights(y_train, [s.source for s in dataset.split("train")], n_classes,
                             within_source=args.balance_within_source)  # fmt: skip
    w_val = sample_weights(y_val, [s.source for s in dataset.split("val")], n_classes,
                           within_source=args.balance_within_source)  # fmt: skip
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=args.lr, weight_decay=1e-4),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.05),
        metrics=["accuracy"],
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "model.keras"
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=args.patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_loss", save_best_only=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(1, args.patience // 2)),
    ]
    deadline = args.time_budget_min * 60 if args.time_budget_min else None
    if deadline:
        callbacks.append(TimeBudget(deadline))
    history = model.fit(
        AugmentedBatches(x_train, y_train, w_train, n_classes, args.batch_size, scale_max, args.seed),
        validation_data=(to_model_batch(x_val), keras.utils.to_categorical(y_val, n_classes), w_val),
        epochs=args.epochs,
        callbacks=callbacks,
        verbose=2,
    )
    train_seconds = time.time() - started
    model = keras.saving.load_model(checkpoint, compile=False)
    model.save(checkpoint)  # without the optimizer's state: a third of the size, all the worker needs

    val_probs = predict(model, x_val)
    temperature = M.fit_temperature(y_val, val_probs)
    calibration = {
        "temperature": temperature,
        "fitted_on": "validation split",
        "val_ece_before": M.expected_calibration_error(y_val, val_probs),
        "val_ece_after": M.expected_calibration_error(y_val, M.apply_temperature(val_probs, temperature)),
    }
    del x_train

    # The test split, touched once.
    test_samples = dataset.split("test")
    x_test, y_test = load_split(test_samples, classes, spec)
    test_raw = predict(model, x_test)
    test_probs = M.apply_temperature(test_raw, temperature)
    calibration["test_ece_before"] = M.expected_calibration_error(y_test, test_raw)
    calibration["test_ece_after"] = M.expected_calibration_error(y_test, test_probs)

    meta = {
        "format_version": 1,
        "name": args.name or f"{args.modality}-{args.arch}",
        "version": args.version or dt.datetime.now(dt.UTC).strftime("%Y.%m.%d"),
        "modality": args.modality,
        "classes": classes,
        "preprocessing": spec.to_json(),
        "architecture": args.arch,
        "pretrained": bool(args.weights or args.init_from),
        "starting_point": _starting_point(args),
        "pretrained_weights": str(args.weights.name) if args.weights else None,
        "initialised_from": _model_label(args.init_from) if args.init_from else None,
        "calibration": calibration,
        "training": {
            "data": str(args.data),
            "counts": dataset.counts(),
            "epochs_run": len(history.history["loss"]),
            "epochs_max": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "batch_norm_momentum": None if args.weights else args.bn_momentum,
            "seed": args.seed,
            "max_per_class": args.max_per_class,
            "loss_weights": "classes balanced overall and within each source"
            if args.balance_within_source
            else "classes balanced overall",
            "seconds": round(train_seconds),
            "keras_backend": keras.backend.backend(),
            "keras_version": keras.__version__,
            "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        },
        "parameters": int(model.count_params()),
    }
    baselines = {}
    if not args.no_baselines:
        from training.baselines import source_prior_probs, thumbnail_logreg_probs

        train_samples = dataset.split("train")
        baselines["source prior"] = source_prior_probs(train_samples, test_samples, classes)
        baselines["16x16 thumbnail logistic regression"] = thumbnail_logreg_probs(train_samples, test_samples, classes)
    write_card(out, meta, test_samples, y_test, test_probs, n_bootstrap=args.bootstrap, baselines=baselines)
    if not args.no_gate:
        from training.gate import calibrate as calibrate_gate  # imports this module: load it late

        calibrate_gate(out, dataset, batch_size=args.batch_size, seed=args.seed)
    from ml.export_onnx import convert_after_training

    convert_after_training(out)
    logger.info("Wrote %s", out)
    return out


def _starting_point(args: argparse.Namespace) -> str:
    if args.init_from:
        return f"transfer learning from {_model_label(args.init_from)}"
    if args.weights:
        return f"transfer learning from ImageNet weights ({args.weights.name})"
    return "trained from scratch (no pretrained weights)"


def _model_label(folder: Path) -> str:
    import json

    meta = json.loads((Path(folder) / "model.json").read_text())
    return f"{meta['name']} {meta['version']} ({meta['modality']}, trained on {meta['training']['data']})"


class TimeBudget(keras.callbacks.Callback):
    """Stop after a wall-clock budget, so comparisons give every architecture the same time."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if time.time() - self.start > self.seconds:
            self.model.stop_training = True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modality", choices=["xray", "ct"])
    parser.add_argument("--data", type=Path, required=True, help="manifest folder or Kaggle-layout folder")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="compact")
    parser.add_argument("--size", type=int, help="input side in pixels (default: per architecture)")
    parser.add_argument("--weights", type=Path, help="local ImageNet weights file for the backbone")
    parser.add_argument("--init-from", type=Path, help="model folder of the same architecture to start from")
    parser.add_argument("--balance-within-source", action="store_true",
                        help="also balance each source's classes in the loss (see sample_weights)")  # fmt: skip
    parser.add_argument("--bn-momentum", type=float, default=0.9,
                        help="batch-norm momentum without --weights (see set_batch_norm_momentum)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-per-class", type=int, help="cap images per class and split (quick runs)")
    parser.add_argument("--time-budget-min", type=float, help="stop training after this many minutes")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for intervals")
    parser.add_argument("--no-baselines", action="store_true", help="skip the baseline models in the card")
    parser.add_argument("--no-gate", action="store_true", help="skip the input gate's calibration (training.gate)")
    parser.add_argument("--name")
    parser.add_argument("--version")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(parse_args(argv))


if __name__ == "__main__":
    main()
