"""Re-evaluate a model folder on its test split and rewrite its metrics, figures and card.

For when the card gains a figure (as the targets gained intervals): the model, preprocessing,
calibration temperature and baselines are the folder's own, nothing is retrained or re-fitted,
so the point figures come out as before and only what the card lacked is added.

    python -m training.evaluate ml/models/xray-compact-1.1.0 --data ../shared/data
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import keras

from ml.preprocessing import Preprocessing
from ml.registry import read_model_json
from training import metrics as M
from training.data import discover
from training.images import load_split
from training.report import write_card
from training.train import predict, subsample

logger = logging.getLogger("training")


def evaluate_folder(folder: Path, data: Path, *, n_bootstrap: int = 1000) -> dict:
    """Predict the test split with the folder's model and calibration; returns the new metrics."""
    folder = Path(folder)
    meta = read_model_json(folder / "model.json")
    training = meta.get("training", {})
    dataset = subsample(discover(data, meta["modality"]), training.get("max_per_class"), training.get("seed", 0))
    if dataset.classes != meta["classes"]:
        raise ValueError(f"{data} has classes {dataset.classes}; the model was trained on {meta['classes']}")
    test_samples = dataset.split("test")
    x_test, y_test = load_split(test_samples, meta["classes"], Preprocessing.from_json(meta["preprocessing"]))
    model = keras.saving.load_model(folder / "model.keras", compile=False)
    probs = M.apply_temperature(predict(model, x_test), meta["calibration"]["temperature"])
    write_card(folder, meta, test_samples, y_test, probs, n_bootstrap=n_bootstrap)
    return meta["metrics"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="model folders (model.json and model.keras inside)")
    parser.add_argument("--data", type=Path, required=True, help="manifest folder or Kaggle-layout folder")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for intervals")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for folder in args.folders:
        metrics = evaluate_folder(folder, args.data, n_bootstrap=args.bootstrap)
        accuracy = metrics["test"]["accuracy"]
        logger.info("%s: test accuracy %.4f; wrote model.json, CARD.md and figures", folder, accuracy)


if __name__ == "__main__":
    main()
