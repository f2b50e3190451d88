"""Installed models: one folder each, holding model.keras and model.json.

model.json describes the model so the platform never guesses: name, version, modality, class
labels in output order, preprocessing, metrics and calibration. An unknown format version is
refused with a message instead of loading a model whose outputs we would misread.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml.preprocessing import Preprocessing

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODALITIES = ("xray", "ct")


class ModelSpecError(ValueError):
    """A model folder whose model.json cannot be used."""


def finite_or_none(value: Any) -> Any:
    """The same structure with NaN and infinities replaced by None (JSON has no NaN: a metric that
    cannot be computed, such as a class's sensitivity with no images of it, is null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(item) for item in value]
    return value


def read_model_json(path: Path) -> dict:
    """model.json as a dict, NaN written by older versions read as None."""
    return finite_or_none(json.loads(Path(path).read_text()))


def write_model_json(path: Path, meta: dict) -> None:
    """Strict JSON: NaN and infinities become null, numpy scalars plain numbers."""
    text = json.dumps(finite_or_none(json.loads(json.dumps(meta, default=float))), indent=2, allow_nan=False)
    Path(path).write_text(text + "\n")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    modality: str
    classes: tuple[str, ...]
    preprocessing: Preprocessing
    folder: Path
    temperature: float = 1.0
    metrics: dict = field(default_factory=dict, compare=False, hash=False)
    card: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def model_file(self) -> Path:
        return self.folder / "model.keras"

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    @classmethod
    def from_folder(cls, folder: Path) -> ModelSpec:
        meta_file = folder / "model.json"
        try:
            meta = read_model_json(meta_file)
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelSpecError(f"{meta_file}: cannot read model.json ({exc})") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelSpecError(
                f"{meta_file}: format_version {meta.get('format_version')!r} is not supported "
                f"(expected {FORMAT_VERSION})"
            )
        try:
            spec = cls(
                name=str(meta["name"]),
                version=str(meta["version"]),
                modality=str(meta["modality"]),
                classes=tuple(str(c) for c in meta["classes"]),
                preprocessing=Preprocessing.from_json(meta["preprocessing"]),
                folder=folder,
                temperature=float(meta.get("calibration", {}).get("temperature", 1.0)),
                metrics=meta.get("metrics", {}),
                card=meta,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelSpecError(f"{meta_file}: invalid model.json ({exc!r})") from None
        if spec.modality not in MODALITIES:
            raise ModelSpecError(f"{meta_file}: unknown modality {spec.modality!r}")
        if len(spec.classes) < 2 or len(set(spec.classes)) != len(spec.classes):
            raise ModelSpecError(f"{meta_file}: classes must be at least two distinct labels")
        if spec.temperature <= 0:
            raise ModelSpecError(f"{meta_file}: calibration temperature must be positive")
        if not spec.model_file.is_file():
            raise ModelSpecError(f"{folder}: model.keras is missing")
        return spec


def _version_key(version: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"[.\-_]", version))


def installed_models(model_dir: Path) -> list[ModelSpec]:
    """Every usable model under model_dir; broken folders are logged and skipped."""
    specs = []
    if not model_dir.is_dir():
        return specs
    for meta_file in sorted(model_dir.glob("*/model.json")):
        try:
            specs.append(ModelSpec.from_folder(meta_file.parent))
        except ModelSpecError as exc:
            logger.error("Skipping model folder: %s", exc)
    return specs


def model_for(modality: str, model_dir: Path) -> ModelSpec | None:
    """The newest installed model for a modality, or None when there is none."""
    candidates = [spec for spec in installed_models(model_dir) if spec.modality == modality]
    if not candidates:
        return None
    return max(candidates, key=lambda spec: (_version_key(spec.version), spec.name))


def find_model(model_dir: Path, name: str, version: str) -> ModelSpec | None:
    """The installed model with this name and version (a prediction's model), or None."""
    return next((spec for spec in installed_models(model_dir) if (spec.name, spec.version) == (name, version)), None)
