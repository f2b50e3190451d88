"""Load a split into arrays with the production preprocessing, and augment batches."""

from __future__ import annotations

import numpy as np

from ml.preprocessing import Preprocessing, prepare
from training.data import Sample


def load_split(samples: list[Sample], classes: list[str], spec: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Images as (n, h, w, 1) float16 (channels are equal, kept once to save memory) and labels."""
    images = np.zeros((len(samples), spec.height, spec.width, 1), dtype=np.float16)
    for i, sample in enumerate(samples):
        images[i, :, :, 0] = prepare(sample.path, spec)[:, :, 0]
    labels = np.array([classes.index(s.label) for s in samples], dtype=np.int64)
    return images, labels


def to_model_batch(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey.astype(np.float32), 3, axis=-1)


def augment(batch: np.ndarray, rng: np.random.Generator, scale_max: float) -> np.ndarray:
    """Radiograph-safe augmentation on (n, h, w, 1) arrays: small shifts and zoom, brightness and
    contrast, and resolution degradation so that image size is no cue. No flips: heart and
    stomach sides matter on a chest film."""
    from PIL import Image

    out = np.empty_like(batch, dtype=np.float32)
    n, h, w, _ = batch.shape
    for i in range(n):
        img = batch[i, :, :, 0].astype(np.float32)
        pil = Image.fromarray(img / scale_max * 255.0).convert("F")
        angle = rng.uniform(-7, 7)
        zoom = rng.uniform(0.92, 1.08)
        dx, dy = rng.uniform(-0.06, 0.06, size=2) * (w, h)
        pil = pil.rotate(angle, resample=Image.Resampling.BILINEAR, translate=(dx, dy))
        if zoom != 1.0:
            zw, zh = int(w * zoom), int(h * zoom)
            pil = pil.resize((zw, zh), Image.Resampling.BILINEAR)
            left, top = (zw - w) // 2, (zh - h) // 2
            pil = pil.crop((left, top, left + w, top + h))
        if rng.random() < 0.4:  # resolution degradation
            factor = rng.uniform(0.35, 0.8)
            small = pil.resize((max(8, int(w * factor)), max(8, int(h * factor))), Image.Resampling.BILINEAR)
            pil = small.resize((w, h), Image.Resampling.BILINEAR)
        arr = np.asarray(pil, dtype=np.float32) / 255.0
        contrast = rng.uniform(0.8, 1.2)
        brightness = rng.uniform(-0.08, 0.08)
        arr = np.clip((arr - arr.mean()) * contrast + arr.mean() + brightness, 0.0, 1.0)
        out[i, :, :, 0] = arr * scale_max
    return out
