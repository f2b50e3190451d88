"""Read an uploaded DICOM object and render the frame XNET classifies as an 8-bit greyscale PNG.

The models were trained on 8-bit greyscale images, so the pixel data is turned into what a
radiologist's viewer would show: stored values -> modality LUT (rescale slope/intercept, to
Hounsfield units for CT) -> VOI LUT or window centre/width (a lung window for CT, because the CT
model was trained on lung-window slices) -> MONOCHROME1 inverted so that air is black.

Every refusal is a ValidationError with a code and a message the user can act on; nothing here
writes to the database or to storage.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import date
from typing import Any, BinaryIO

import numpy as np
import pydicom
from django.core.exceptions import ValidationError
from PIL import Image as PILImage
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from diagnosis.limits import check_image_size
from diagnosis.models import Modality

# DICOM Modality (0008,0060) -> the XNET model that reads it. CR/DX (and the older RG) are
# projection radiographs; OT/SC (secondary captures, digitised films) say nothing about the
# modality, so the case's modality applies. Anything else is not a chest X-ray or CT.
XRAY_MODALITIES = frozenset({"CR", "DX", "RG", "DR"})
CT_MODALITIES = frozenset({"CT"})
NEUTRAL_MODALITIES = frozenset({"", "OT", "SC"})
MODALITY_NAMES = {
    "MR": "an MR image",
    "US": "an ultrasound image",
    "NM": "a nuclear medicine image",
    "PT": "a PET image",
    "MG": "a mammogram",
    "XA": "an angiography image",
    "RF": "a fluoroscopy image",
    "IO": "an intra-oral dental image",
    "PX": "a panoramic dental X-ray",
    "ES": "an endoscopy image",
    "XC": "a photograph",
    "OP": "an ophthalmic photograph",
    "SM": "a slide microscopy image",
    "SEG": "a segmentation",
    "RTDOSE": "an RT dose grid",
    "RTIMAGE": "an RT portal image",
}
# Body Part Examined (0018,0015) is free text in practice ("CHEST", "THORAX", "Lung", "TORAX").
CHEST_BODY_PARTS = ("CHEST", "THORA", "LUNG", "TORAX", "TORACE", "BRUST")
# Lung window for CT, in Hounsfield units.
CT_LUNG_WINDOW = {"center": -600.0, "width": 1500.0}


@dataclass(frozen=True)
class DicomImage:
    """What an upload needs from a DICOM: the PNG to store and classify, and its header facts."""

    png: bytes
    width: int
    height: int
    modality: str | None  # Modality.XRAY or Modality.CT; None for OT/SC (the case decides)
    frame_index: int | None  # 0-based; None for a single-frame object
    sop_instance_uid: str
    patient: DicomPatient
    header: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DicomPatient:
    patient_id: str
    name: str
    birth_date: date | None
    sex: str  # Patient.Sex value: F, M, O or U


def has_dicom_preamble(file: BinaryIO) -> bool:
    """A DICOM Part 10 file: a 128-byte preamble, then "DICM"."""
    file.seek(0)
    head = file.read(132)
    file.seek(0)
    return len(head) == 132 and head[128:132] == b"DICM"


def _parse(file: BinaryIO, *, force: bool, stop_before_pixels: bool = False) -> Dataset:
    file.seek(0)
    try:
        ds = pydicom.dcmread(file, force=force, stop_before_pixels=stop_before_pixels)
    except Exception:
        # pydicom raises many types on damaged input (InvalidDicomError, EOFError, struct.error,
        # ValueError, KeyError...); for an upload they all mean the same thing.
        raise ValidationError(
            "This DICOM file is damaged or truncated and cannot be read; export it again from the PACS.",
            code="dicom_corrupt",
        ) from None
    finally:
        file.seek(0)
    if force and "SOPClassUID" not in ds and "PixelData" not in ds and "Modality" not in ds:
        # force=True reads almost any bytes as "a dataset"; without these it is not DICOM.
        raise ValidationError("Not a DICOM file.", code="not_dicom")
    if "TransferSyntaxUID" not in ds.file_meta:
        # A dataset without file meta information: its encoding is the one pydicom found.
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return ds


def looks_like_dicom(file: BinaryIO) -> bool:
    """A DICOM without the Part 10 preamble (older or raw datasets) that pydicom can still read."""
    try:
        _parse(file, force=True, stop_before_pixels=True)
    except ValidationError:
        return False
    return True


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if value else ""
    return str(value).strip()


def _date(value: str) -> date | None:
    value = value.strip()
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


def _person_name(ds: Dataset) -> str:
    name = ds.get("PatientName")
    if not name:
        return ""
    given = " ".join(part for part in (name.given_name, name.middle_name) if part)
    full = " ".join(part for part in (given, name.family_name) if part).strip()
    return full or str(name).replace("^", " ").strip()


def patient_of(ds: Dataset) -> DicomPatient:
    sex = _text(ds, "PatientSex").upper()[:1]
    return DicomPatient(
        patient_id=_text(ds, "PatientID"),
        name=_person_name(ds),
        birth_date=_date(_text(ds, "PatientBirthDate")),
        sex=sex if sex in {"F", "M", "O"} else "U",
    )


def modality_of(ds: Dataset) -> str | None:
    """The XNET modality of this object, None when the object does not say (OT/SC); refuses
    modalities no XNET model reads."""
    code = _text(ds, "Modality").upper()
    if code in XRAY_MODALITIES:
        return Modality.XRAY
    if code in CT_MODALITIES:
        return Modality.CT
    if code in NEUTRAL_MODALITIES:
        return None
    what = MODALITY_NAMES.get(code, "not a chest X-ray or CT")
    raise ValidationError(
        f"This DICOM is {what} (modality {code}). XNET classifies chest X-rays (CR, DX) and chest CT only.",
        code="dicom_wrong_modality",
    )


def _check_body_part(ds: Dataset) -> None:
    body_part = _text(ds, "BodyPartExamined")
    if body_part and not any(word in body_part.upper() for word in CHEST_BODY_PARTS):
        raise ValidationError(
            f"This DICOM shows body part “{body_part}”, not the chest. XNET's models read chest images only.",
            code="dicom_not_chest",
        )


def _frame_count(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def _choose_frame(ds: Dataset, frame: int | None) -> int | None:
    """0-based index of the frame to render (None for a single-frame object); `frame` is 1-based."""
    frames = _frame_count(ds)
    if frame is None:
        if frames > 1:
            raise ValidationError(
                f"This DICOM has {frames} frames (slices); choose which one to classify (frame 1 to {frames}).",
                code="dicom_frame_required",
            )
        return None
    if not 1 <= frame <= frames:
        available = "it has a single frame (frame 1)" if frames == 1 else f"it has {frames} frames (1 to {frames})"
        raise ValidationError(f"Frame {frame} does not exist in this DICOM: {available}.", code="dicom_frame_invalid")
    return frame - 1 if frames > 1 else None


def _undecodable(ds: Dataset) -> ValidationError:
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    name = getattr(syntax, "name", None) or str(syntax or "an unknown transfer syntax")
    return ValidationError(
        f"The pixel data is compressed as {name}, which XNET cannot decode here. Export the image "
        "uncompressed (Explicit VR Little Endian) from your PACS or viewer and upload it again.",
        code="dicom_unsupported_compression",
    )


def _check_decoder(ds: Dataset) -> None:
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is None or not syntax.is_compressed:
        return
    try:
        available = get_decoder(syntax).is_available
    except (NotImplementedError, ValueError):
        available = False
    if not available:
        raise _undecodable(ds)


def _window(ds: Dataset, values: np.ndarray, modality: str | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Values after the modality LUT -> 0..1, and a note of the window used."""
    if modality == Modality.CT:
        center, width = CT_LUNG_WINDOW["center"], CT_LUNG_WINDOW["width"]
        source = "lung window (CT default)"
    elif "VOILUTSequence" in ds:
        # A lookup table chosen by the modality; its output spans the table's own values.
        # The table is indexed by whole values (pydicom warns about floats).
        out = apply_voi_lut(np.rint(values).astype(np.int64), ds, prefer_lut=True).astype(np.float64)
        # Its output range: the table itself, read by the same function (LUTData may be US or OW).
        entries, first_value = (
            int(ds.VOILUTSequence[0].LUTDescriptor[0]) or 65536,
            int(ds.VOILUTSequence[0].LUTDescriptor[1]),
        )
        inputs = np.arange(first_value, first_value + entries, dtype=np.int64)
        table = apply_voi_lut(inputs, ds, prefer_lut=True).astype(np.float64)
        low, high = float(table.min()), float(table.max())
        scaled = (out - low) / (high - low) if high > low else np.zeros_like(out)
        return np.clip(scaled, 0.0, 1.0), {"source": "VOI LUT"}
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = float(_first(ds.WindowCenter)), float(_first(ds.WindowWidth))
        source = "window centre/width from the file"
    else:
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values, dtype=np.float64)
        return scaled, {"source": "full range", "min": low, "max": high}
    width = max(width, 1.0)
    # The linear VOI function of PS3.3 C.11.2.1.2, to 0..1.
    scaled = np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0) if width > 1 else values > center
    return np.asarray(scaled, dtype=np.float64), {"source": source, "center": center, "width": width}


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, pydicom.multival.MultiValue) else value


def _render(ds: Dataset, frame_index: int | None, modality: str | None) -> tuple[bytes, dict[str, Any]]:
    _check_decoder(ds)
    if frame_index is not None:
        ds.pixel_array_options(index=frame_index)
    try:
        stored = ds.pixel_array
    except RuntimeError:
        # Every installed decoder is missing or failed (e.g. 12-bit JPEG Extended).
        raise _undecodable(ds) from None
    except Exception:
        raise ValidationError(
            "The DICOM's pixel data is truncated or damaged; export the image again from the PACS.",
            code="dicom_corrupt",
        ) from None
    if stored.ndim != 2:
        raise ValidationError("The DICOM's pixel data is not a single greyscale image.", code="dicom_not_greyscale")
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    scaled, window = _window(ds, values, modality)
    if _text(ds, "PhotometricInterpretation") == "MONOCHROME1":
        scaled = 1.0 - scaled  # MONOCHROME1: the lowest value is white
    pixels = np.rint(scaled * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue(), window


def read_dicom(file: BinaryIO, *, frame: int | None = None, force: bool = False) -> DicomImage:
    """Check a DICOM upload and render its (chosen) frame; ValidationError on anything unusable."""
    ds = _parse(file, force=force)
    if "PixelData" not in ds and ("SOPClassUID" not in ds or "Rows" in ds):
        # An image header whose file ends before the pixel data, or a file cut inside its header.
        raise ValidationError(
            "This DICOM file ends before its pixel data: it is truncated or damaged. Export it again from the PACS.",
            code="dicom_corrupt",
        )
    if "PixelData" not in ds:
        sop_class = ds.get("SOPClassUID")
        kind = f" ({sop_class.name})" if sop_class is not None and getattr(sop_class, "name", "") else ""
        raise ValidationError(
            f"This DICOM object{kind} has no image pixel data; upload a chest X-ray or CT image.",
            code="dicom_no_pixels",
        )
    modality = modality_of(ds)
    _check_body_part(ds)
    photometric = _text(ds, "PhotometricInterpretation")
    if photometric not in {"MONOCHROME1", "MONOCHROME2"}:
        raise ValidationError(
            f"This DICOM is a colour image ({photometric or 'no photometric interpretation'}); "
            "chest X-rays and CT are greyscale (MONOCHROME1 or MONOCHROME2).",
            code="dicom_not_greyscale",
        )
    try:
        width, height = int(ds.Columns), int(ds.Rows)
    except (AttributeError, TypeError, ValueError):
        raise ValidationError(
            "The DICOM does not say how large its image is (Rows/Columns).", code="dicom_corrupt"
        ) from None
    check_image_size(width, height)
    frame_index = _choose_frame(ds, frame)
    png, window = _render(ds, frame_index, modality)
    patient = patient_of(ds)
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    header = {
        "modality": _text(ds, "Modality"),
        "body_part": _text(ds, "BodyPartExamined"),
        "view_position": _text(ds, "ViewPosition"),
        "patient_id": patient.patient_id,
        "patient_name": patient.name,
        "patient_birth_date": patient.birth_date.isoformat() if patient.birth_date else "",
        "patient_sex": _text(ds, "PatientSex"),
        "study_date": (d.isoformat() if (d := _date(_text(ds, "StudyDate"))) else ""),
        "study_instance_uid": _text(ds, "StudyInstanceUID"),
        "series_instance_uid": _text(ds, "SeriesInstanceUID"),
        "sop_instance_uid": _text(ds, "SOPInstanceUID"),
        "photometric_interpretation": photometric,
        "bits_stored": int(ds.get("BitsStored") or 0),
        "number_of_frames": _frame_count(ds),
        "transfer_syntax": getattr(syntax, "name", "") or str(syntax or ""),
        "window": window,
    }
    return DicomImage(
        png=png,
        width=width,
        height=height,
        modality=modality,
        frame_index=frame_index,
        sop_instance_uid=header["sop_instance_uid"][:64],
        patient=patient,
        header=header,
    )
