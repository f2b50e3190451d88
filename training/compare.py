"""Train the reference architectures and the compact one with the same budget; write a table.

    python -m training.compare xray --data ../shared/data --time-budget-min 20 --size 128 \
        --out benchmarks/results/compare-xray

Writes compare.md and compare.csv: accuracy, balanced accuracy, macro F1, macro AUC (test split,
patient-level split from the manifest), parameters, file size and CPU inference time per image.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from training import train as train_module
from training.architectures import ARCHITECTURES

DEFAULT_ARCHS = ["resnet50", "xception", "inceptionv3", "efficientnetb0", "mobilenetv3small", "compact"]
COLUMNS = ["architecture", "input", "accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "parameters",
           "file_mb", "cpu_ms_per_image", "epochs", "train_minutes"]  # fmt: skip


def cpu_inference_ms(model_folder: Path, repeats: int = 20) -> float:
    import keras

    meta = json.loads((model_folder / "model.json").read_text())
    model = keras.saving.load_model(model_folder / "model.keras", compile=False)
    size = meta["preprocessing"]["height"], meta["preprocessing"]["width"]
    batch = np.random.default_rng(0).random((1, *size, 3), dtype=np.float32)
    model.predict_on_batch(batch)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        model.predict_on_batch(batch)
    return (time.perf_counter() - start) / repeats * 1000


def row_for(arch: str, folder: Path) -> dict:
    meta = json.loads((folder / "model.json").read_text())
    test = meta["metrics"]["test"]
    return {
        "architecture": arch,
        "input": meta["preprocessing"]["width"],
        "accuracy": round(test["accuracy"], 4),
        "balanced_accuracy": round(test["balanced_accuracy"], 4),
        "macro_f1": round(test["macro_f1"], 4),
        "macro_auc": round(test["macro_auc"], 4),
        "parameters": meta["parameters"],
        "file_mb": round((folder / "model.keras").stat().st_size / 1e6, 1),
        "cpu_ms_per_image": round(cpu_inference_ms(folder), 1),
        "epochs": meta["training"]["epochs_run"],
        "train_minutes": round(meta["training"]["seconds"] / 60, 1),
    }


def write_tables(rows: list[dict], out: Path, header: str) -> None:
    with (out / "compare.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = [header, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    (out / "compare.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modality", choices=["xray", "ct"])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--archs", nargs="+", default=DEFAULT_ARCHS, choices=sorted(ARCHITECTURES))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--time-budget-min", type=float, default=20)
    parser.add_argument("--size", type=int, help="one input size for all (default: per architecture)")
    parser.add_argument("--max-per-class", type=int)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    rows = []
    for arch in args.archs:
        folder = args.out / arch
        train_argv = [args.modality, "--data", str(args.data), "--arch", arch, "--epochs", str(args.epochs),
                      "--time-budget-min", str(args.time_budget_min), "--batch-size", str(args.batch_size),
                      "--bootstrap", "200", "--no-baselines", "--no-gate", "--out", str(folder)]  # fmt: skip
        if args.size:
            train_argv += ["--size", str(args.size)]
        if args.max_per_class:
            train_argv += ["--max-per-class", str(args.max_per_class)]
        train_module.main(train_argv)
        rows.append(row_for(arch, folder))
        write_tables(rows, args.out, _header(args))
    print((args.out / "compare.md").read_text())


def _header(args: argparse.Namespace) -> str:
    import keras

    return (
        f"Comparison, {args.modality}: budget {args.time_budget_min} min or {args.epochs} epochs per architecture, "
        f"input {args.size or 'per architecture'}, max {args.max_per_class or 'all'} images per class and split, "
        f"from scratch (no pretrained weights), Keras {keras.__version__} on {keras.backend.backend()}."
    )


if __name__ == "__main__":
    main()
