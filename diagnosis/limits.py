"""Pixel-size limits every upload meets, whatever its format (PNG, JPEG or DICOM).

Checked from the header, before any pixel is decoded: that is what stops a decompression bomb.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError


def check_image_size(width: int, height: int) -> None:
    """Refuse an image above XNET_MAX_IMAGE_PIXELS or with a side under XNET_MIN_IMAGE_SIDE."""
    pixels = width * height
    if pixels > settings.XNET_MAX_IMAGE_PIXELS:
        raise ValidationError(
            f"The image is {width}x{height} pixels ({pixels / 1e6:.0f} megapixels); the limit is "
            f"{settings.XNET_MAX_IMAGE_PIXELS / 1e6:.0f} megapixels.",
            code="too_many_pixels",
        )
    if min(width, height) < settings.XNET_MIN_IMAGE_SIDE:
        raise ValidationError(
            f"The image is only {width}x{height} pixels; at least {settings.XNET_MIN_IMAGE_SIDE} "
            "pixels per side are needed.",
            code="too_small",
        )
