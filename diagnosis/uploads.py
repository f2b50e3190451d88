"""Inspect an uploaded file before anything is written.

Judged by content, never by filename: the header is parsed first (cheap), the pixel count is
checked before any decoding (decompression bombs), and only then is the whole image decoded
to catch truncation. A DICOM (Part 10 preamble, or a dataset pydicom reads without one) goes to
diagnosis.dicom, which checks it and renders the frame to classify as a PNG.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from PIL import Image, UnidentifiedImageError

from diagnosis.dicom import DicomImage, has_dicom_preamble, looks_like_dicom, read_dicom
from diagnosis.limits import check_image_size
from ml.gate import image_measures
from ml.preprocessing import Preprocessing, load_grey, resized_grey

logger = logging.getLogger(__name__)

ACCEPTED_FORMATS = ("PNG", "JPEG")
ACCEPTED_TEXT = "Upload a PNG, JPEG or DICOM chest image."


@dataclass(frozen=True)
class InspectedImage:
    format: str
    width: int
    height: int
    sha256: str
    size_bytes: int
    dicom: DicomImage | None = None  # set for a DICOM upload: its rendered PNG and header
    # PNG or JPEG: the picture decoded as the worker reads it (greyscale, EXIF-rotated) and the
    # input gate's measures of the original pixels, so the worker need not decode it again (worker_copy).
    grey: Image.Image | None = field(default=None, repr=False, compare=False)
    measures: dict | None = None


@dataclass(frozen=True)
class WorkerCopy:
    """What the worker reads instead of decoding the upload: the gate's measures and the
    greyscale picture already resized to each installed model's input size."""

    measures: dict
    greys: dict[tuple[int, int], Image.Image]


def worker_copy(inspected: InspectedImage, sizes: set[tuple[int, int]]) -> bytes | None:
    """The upload's worker copy as .npz bytes (uncompressed: about 50 KB at 224 px, read in well
    under a millisecond), or None when there is nothing to store (a DICOM, no model installed).

    The resize is ml.preprocessing's own (bilinear from the full picture), so the model input made
    from the copy equals the one made from the upload, bit for bit (tests/test_job_services.py).
    """
    if inspected.grey is None or inspected.measures is None or not sizes:
        return None
    arrays = {"measures": np.frombuffer(json.dumps(inspected.measures).encode(), dtype=np.uint8)}
    for width, height in sorted(sizes):
        resized = resized_grey(inspected.grey, Preprocessing(width=width, height=height))
        arrays[f"grey_{width}x{height}"] = np.asarray(resized, dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_worker_copy(file: BinaryIO) -> WorkerCopy:
    with np.load(file) as data:
        measures = json.loads(data["measures"].tobytes())
        greys = {}
        for key in data.files:
            if key.startswith("grey_"):
                width, height = (int(n) for n in key[len("grey_") :].split("x"))
                greys[(width, height)] = Image.fromarray(data[key], mode="L")
    return WorkerCopy(measures=measures, greys=greys)


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def _sha256(file: BinaryIO) -> str:
    file.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: file.read(1024 * 1024), b""):
        digest.update(chunk)
    file.seek(0)
    return digest.hexdigest()


def _inspect_dicom(file: BinaryIO, *, size: int, frame: int | None, force: bool) -> InspectedImage:
    dicom = read_dicom(file, frame=frame, force=force)
    return InspectedImage(
        format="DICOM", width=dicom.width, height=dicom.height, sha256=_sha256(file), size_bytes=size, dicom=dicom
    )


def _decode_as_worker(image: Image.Image) -> Image.Image:
    """Run the decoding steps the worker runs (EXIF orientation, greyscale conversion), so an
    image that would fail there is refused here, with a reason, instead of failing its job.

    A greyscale JPEG whose EXIF block is malformed passed the checks above and then made
    PIL.ImageOps.exif_transpose raise struct.error in the worker. Any error here is the file's.
    """
    try:
        return load_grey(image)
    except Exception as exc:
        logger.info("Upload refused: decoding as the worker does raised %r", exc)
        raise ValidationError(
            "The image cannot be decoded the way the classifier reads it: its metadata (such as the EXIF "
            "orientation) or pixel data is malformed. Export it again as PNG or JPEG and upload the new file.",
            code="corrupt",
        ) from None


def inspect_upload(file: BinaryIO, *, size: int | None = None, frame: int | None = None) -> InspectedImage:
    """Return the image's facts or raise ValidationError with a message a user can act on.

    `frame` (1-based) picks the frame of a multi-frame DICOM; other formats ignore it.
    """
    if size is None:
        file.seek(0, 2)
        size = file.tell()
    if size == 0:
        raise ValidationError("The file is empty (0 bytes).", code="empty")
    limit = settings.XNET_MAX_UPLOAD_BYTES
    if size > limit:
        raise ValidationError(
            f"The file is {_megabytes(size)}; the upload limit is {_megabytes(limit)}.", code="too_large"
        )

    if has_dicom_preamble(file):
        return _inspect_dicom(file, size=size, frame=frame, force=False)
    file.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(file)
            image_format = image.format
            width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValidationError("The image has too many pixels to be processed safely.", code="too_many_pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        if looks_like_dicom(file):
            return _inspect_dicom(file, size=size, frame=frame, force=True)
        raise ValidationError(
            f"This file is not an image XNET can read. {ACCEPTED_TEXT}", code="not_an_image"
        ) from None

    if image_format not in ACCEPTED_FORMATS:
        raise ValidationError(
            f"Unsupported image format {image_format}. {ACCEPTED_TEXT}",
            code="unsupported_format",
        )
    check_image_size(width, height)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise ValidationError(
            "The image is truncated or corrupt; upload the complete file again.", code="corrupt"
        ) from None
    grey = _decode_as_worker(image)

    return InspectedImage(
        format=image_format,
        width=width,
        height=height,
        sha256=_sha256(file),
        size_bytes=size,
        grey=grey,
        measures=image_measures(image, grey=grey),
    )
