"""Find labelled images: XNET's manifest.csv, or any folder in the Kaggle layout.

Classes come from the data: a class with no training images is left out with a warning,
never trained as a class with no examples.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
# Known labels keep a stable output order across retrains; unknown ones follow, sorted.
CANONICAL_ORDER = {
    "xray": ["normal", "pneumonia", "covid", "tuberculosis"],
    "ct": ["covid", "non_covid"],
}


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    split: str
    source: str = "unknown"
    group: str = ""


@dataclass
class Dataset:
    modality: str
    classes: list[str]
    samples: list[Sample]

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    def counts(self) -> dict:
        """Per split: images per class and per source, for the model card."""
        summary = {}
        for split in SPLITS:
            samples = self.split(split)
            summary[split] = {
                "total": len(samples),
                "per_class": dict(Counter(s.label for s in samples)),
                "per_source": {
                    src: dict(Counter(s.label for s in samples if s.source == src))
                    for src in sorted({s.source for s in samples})
                },
            }
        return summary


def _from_manifest(data_dir: Path, modality: str) -> list[Sample]:
    samples = []
    with (data_dir / "manifest.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["modality"] != modality or row["split"] not in SPLITS:
                continue
            samples.append(
                Sample(
                    path=data_dir / row["path"],
                    label=row["label"],
                    split=row["split"],
                    source=row.get("source_dataset") or "unknown",
                    group=row.get("group_id") or row["path"],
                )
            )
    return samples


def _from_folders(root: Path) -> list[Sample]:
    samples = []
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            label = class_dir.name.lower().replace("-", "_").replace(" ", "_")
            for path in sorted(class_dir.rglob("*")):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    samples.append(Sample(path=path, label=label, split=split, source=root.name, group=str(path)))
    return samples


def _folder_classes(root: Path) -> set[str]:
    return {
        p.name.lower().replace("-", "_").replace(" ", "_")
        for split in SPLITS
        if (root / split).is_dir()
        for p in (root / split).iterdir()
        if p.is_dir()
    }


def discover(data_dir: Path, modality: str) -> Dataset:
    """Read <data_dir>/manifest.csv if present, else <data_dir>/<modality>/ or <data_dir> as
    train/val/test/<class>/ folders."""
    data_dir = Path(data_dir)
    declared: set[str] = set()
    if (data_dir / "manifest.csv").is_file():
        samples = _from_manifest(data_dir, modality)
        root = data_dir / modality
        if root.is_dir():
            declared = _folder_classes(root)
    else:
        root = data_dir / modality if (data_dir / modality / "train").is_dir() else data_dir
        samples = _from_folders(root)
        declared = _folder_classes(root)
    if not samples:
        raise ValueError(f"no {modality} images found under {data_dir}")

    trained = Counter(s.label for s in samples if s.split == "train")
    for label in sorted(declared | {s.label for s in samples}):
        if trained[label] == 0:
            logger.warning("Class %r has no training images: left out of the model", label)
    order = CANONICAL_ORDER.get(modality, [])
    classes = [c for c in order if trained[c]] + sorted(c for c in trained if c not in order)
    if len(classes) < 2:
        raise ValueError(f"need at least two classes with training images, found {classes}")
    kept = [s for s in samples if s.label in classes]
    return Dataset(modality=modality, classes=classes, samples=kept)


def cap_training(dataset: Dataset, per_source_class: int | None, seed: int = 0) -> Dataset:
    """Keep at most `per_source_class` training images of each (source, class); val and test untouched.

    The CPU budget for frozen-backbone features: 4,053 pediatric Kermany and 1,949 covid19rad224
    training films add little once a few hundred of each are seen, while every source's validation
    and test images keep their full count for the figures."""
    if not per_source_class:
        return dataset
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str], list[int]] = {}
    for index, sample in enumerate(dataset.samples):
        if sample.split == "train":
            groups.setdefault((sample.source, sample.label), []).append(index)
    dropped: set[int] = set()
    for key in sorted(groups):
        members = groups[key]
        if len(members) > per_source_class:
            keep = set(rng.choice(members, per_source_class, replace=False).tolist())
            dropped.update(i for i in members if i not in keep)
    kept = [s for i, s in enumerate(dataset.samples) if i not in dropped]
    return Dataset(modality=dataset.modality, classes=dataset.classes, samples=kept)
