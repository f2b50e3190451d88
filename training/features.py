"""Frozen-backbone features: one pass of a pretrained backbone over the images, cached on disk.

With the backbone frozen, a model is its backbone plus a linear head, and the head trains in
seconds on stored features. That makes leave-one-source-out validation (training.crossval) and
the shortcut-defence comparison cheap on a CPU: each variant of the preprocessing costs one pass
over the images, each fold only a head. The cache key covers the backbone, weights file,
preprocessing, augmentation seed and the image list, so a stale cache is never read.

For every image the cache keeps the pooled features (the head's input and the gate's features)
and the last feature map in float16 (class activation maps for any head, without the backbone).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from ml.preprocessing import Preprocessing, load_grey, to_array
from training.architectures import ARCHITECTURES, build_model
from training.data import Sample
from training.shortcuts import add_cues

logger = logging.getLogger("training")


@dataclass
class Features:
    pooled: np.ndarray  # (n, channels) float32
    maps: np.ndarray  # (n, h, w, channels) float16


def backbone_extractor(arch: str, size: int, weights: Path | None) -> keras.Model:
    """Input image -> last 4-D feature map, the part of build_model's network before the head."""
    model = build_model(arch, n_classes=2, input_size=size, weights_path=weights)
    pool = model.get_layer("pool")
    return keras.Model(model.inputs, pool.input)


def prepared(sample_path: Path, spec: Preprocessing, rng: np.random.Generator | None) -> np.ndarray:
    """The production preprocessing, with shortcut cues drawn at model size when rng is given."""
    image = load_grey(sample_path)
    if rng is not None:
        image = add_cues(image.resize((spec.width, spec.height), Image.Resampling.BILINEAR), rng)
    return to_array(image, spec)


def cache_key(arch: str, weights: Path | None, spec: Preprocessing, augment_seed: int | None, paths: list) -> str:
    digest = hashlib.sha256()
    weights_id = f"{weights.name}:{weights.stat().st_size}" if weights else "none"
    digest.update(json.dumps([arch, weights_id, spec.to_json(), augment_seed]).encode())
    for path in paths:
        digest.update(str(path).encode())
    return digest.hexdigest()[:16]


def extract(
    samples: list[Sample],
    *,
    arch: str,
    spec: Preprocessing,
    weights: Path | None,
    cache_dir: Path | None = None,
    augment_seed: int | None = None,
    batch_size: int = 32,
) -> Features:
    """Features of every sample, in order; read from cache_dir when this exact pass was made before."""
    paths = [s.path for s in samples]
    cache = None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache = cache_dir / f"{arch}-{cache_key(arch, weights, spec, augment_seed, paths)}.npz"
        if cache.is_file():
            with np.load(cache) as data:
                return Features(pooled=data["pooled"], maps=data["maps"])
    if ARCHITECTURES[arch].scale != spec.scale:
        raise ValueError(f"{arch} expects scale {ARCHITECTURES[arch].scale!r}, preprocessing has {spec.scale!r}")
    extractor = backbone_extractor(arch, spec.width, weights)
    pooled, maps = [], []
    started = time.time()
    for start in range(0, len(samples), batch_size):
        batch = np.stack(
            [
                prepared(
                    path, spec, np.random.default_rng([augment_seed, start + i]) if augment_seed is not None else None
                )
                for i, path in enumerate(paths[start : start + batch_size])
            ]
        ).astype(np.float32)
        fmap = np.asarray(extractor.predict_on_batch(batch), dtype=np.float32)
        pooled.append(fmap.mean(axis=(1, 2)))
        maps.append(fmap.astype(np.float16))
        if (start // batch_size) % 20 == 0:
            logger.info(
                "features %s: %d/%d images, %.0f s", arch, start + len(batch), len(samples), time.time() - started
            )
    result = Features(pooled=np.concatenate(pooled), maps=np.concatenate(maps))
    if cache is not None:
        np.savez(cache, pooled=result.pooled, maps=result.maps)
    return result
