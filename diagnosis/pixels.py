"""The 16-bit rendition of a DICOM image's modality values, made when the viewer first asks.

The 8-bit PNG of a DICOM (`Image.rendered`) is windowed once at intake; the viewer windows again
in the browser, and needs the real values for that. They are rendered from the private original
on first request (so images uploaded before this existed get one too) and kept in private storage
beside the 8-bit copy, under a name made from the image's id and content hash: no column, and a
replaced file can never be served for another image.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from django.core.files.base import ContentFile
from django.core.files.storage import Storage

from diagnosis.dicom import modality_values_png
from diagnosis.models import Image


class NoModalityValues(Exception):
    """A PNG or JPEG upload: its 8 bits are all there is, and the viewer windows those."""


def _storage(image: Image) -> Storage:
    return image.file.storage


def pixels_name(image: Image) -> str:
    return f"pixels16/{image.pk}-{image.sha256[:16]}.png"


def pixels16_open(*, image: Image) -> BinaryIO:
    """The 16-bit PNG of a DICOM image's modality values, rendered and stored on first use.

    Raises NoModalityValues for a PNG or JPEG upload (its 8 bits are all there is) and
    FileNotFoundError when the original DICOM is gone. Two first requests at once both render;
    the storage keeps one file (the second save gets its own name and is removed).
    """
    if image.format != Image.Format.DICOM:
        raise NoModalityValues(f"image {image.pk} is a {image.format}, not a DICOM")
    storage, name = _storage(image), pixels_name(image)
    if not storage.exists(name):
        if not image.file:
            raise FileNotFoundError(f"image {image.pk} has no file")
        with image.file.open("rb") as original:
            rendition = modality_values_png(io.BytesIO(original.read()), frame_index=image.frame_index)
        saved = storage.save(name, ContentFile(rendition.png))
        if saved != name:  # another request stored it first
            storage.delete(saved)
    return storage.open(name, "rb")
