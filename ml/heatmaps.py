"""Heatmap images: a Grad-CAM array (0..1) -> a transparent, coloured PNG to draw over the image.

Numpy and zlib only. The PNG has the model input's size; the page stretches it over the shown
image, which matches because preprocessing stretched the image to that size in the first place.
Weak activations are transparent, so the overlay hides nothing the model did not look at.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

# A perceptually ordered colour ramp (dark blue -> cyan -> yellow -> red), as (position, RGB).
_RAMP = (
    (0.0, (48, 18, 120)),
    (0.25, (40, 120, 220)),
    (0.5, (60, 210, 170)),
    (0.75, (250, 210, 40)),
    (1.0, (220, 40, 30)),
)


def colourise(cam: np.ndarray) -> np.ndarray:
    """(h, w) in 0..1 -> (h, w, 4) uint8 RGBA; alpha rises with the activation."""
    values = np.clip(np.nan_to_num(np.asarray(cam, dtype=np.float32)), 0.0, 1.0)
    positions = [p for p, _ in _RAMP]
    rgba = np.empty((*values.shape, 4), dtype=np.uint8)
    for channel in range(3):
        rgba[..., channel] = np.interp(values, positions, [c[channel] for _, c in _RAMP]).astype(np.uint8)
    rgba[..., 3] = (np.clip(values * 1.25, 0.0, 1.0) * 255).astype(np.uint8)
    return rgba


def heatmap_png(cam: np.ndarray) -> bytes:
    """The overlay as PNG, written for speed: the worker writes one per prediction.

    Each row with PNG's "sub" filter (the difference to the pixel on the left, which a smooth map
    makes mostly small) and one zlib pass at level 1, written directly: at 224 px 7.9 ms and 38 KB
    against 12.6 ms and 46 KB for Pillow at level 1 (its adaptive filtering tries every filter per
    row), and 58 ms with optimize=True (measured together on a loaded 2-core machine). Lossless:
    Pillow reads back exactly colourise(cam) (tests/test_heatmaps.py).
    """
    rgba = colourise(cam)
    height, width, _ = rgba.shape
    flat = rgba.reshape(height, width * 4)
    rows = np.empty((height, width * 4 + 1), dtype=np.uint8)
    rows[:, 0] = 1  # filter type: sub
    rows[:, 1:5] = flat[:, :4]
    np.subtract(flat[:, 4:], flat[:, :-4], out=rows[:, 5:])  # uint8 arithmetic wraps, as PNG's does
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA, no interlace
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 1))
        + _chunk(b"IEND", b"")
    )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
