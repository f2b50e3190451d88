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
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, BinaryIO

import numpy as np
import pydicom
from django.core.exceptions import ValidationError
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo
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
# Study/Series Description and Protocol Name are free text too ("CT HEAD W/O", "Abd/Pelvis",
# "KNEE LAT"). Matched against the words of the text: a word naming the chest wins (a "CHEST
# ABDOMEN PELVIS" series holds chest slices), else one naming another region refuses the image.
DESCRIPTION_KEYWORDS = ("StudyDescription", "SeriesDescription", "ProtocolName")
CHEST_WORD_PREFIXES = (*CHEST_BODY_PARTS, "PULMO", "CTPA")
NOT_CHEST_WORDS = frozenset(
    {"ABD", "ARM", "LEG", "HIP", "HIPS", "HAND", "HANDS", "FOOT", "FEET", "FACE", "KNEE", "NECK"}
)
NOT_CHEST_WORD_PREFIXES = (
    "HEAD", "BRAIN", "SKULL", "CRANI", "CRANE", "CEREB", "NEURO", "SINUS", "ORBIT", "FACIAL", "MAXILL",
    "MANDIB", "DENTAL", "ABDOM", "PELVI", "KNEES", "SHOULDER", "ELBOW", "WRIST", "ANKLE", "FEMUR", "FEMOR",
    "TIBIA", "FIBUL", "HUMER", "FOREARM", "LUMBAR", "SACR", "COCCY", "CERVICAL", "KIDNEY", "RENAL", "HEPAT",
    "LIVER", "PANCREA", "COLON", "BLADDER", "PROSTAT", "KOPF", "SCHAEDEL", "SCHADEL", "CABEZA",
)  # fmt: skip
# Lung window for CT, in Hounsfield units.
CT_LUNG_WINDOW = {"center": -600.0, "width": 1500.0}
# The measured chest check for CT (see lung_air_fraction): body tissue above this HU, air-filled
# lung below it; outside air is what connects to the image edge at under CT_OUTSIDE_AIR_HU.
CT_BODY_MIN_HU = -400.0
CT_OUTSIDE_AIR_HU = -950.0
CT_MIN_LUNG_AIR_FRACTION = 0.01


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


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Z]+", text.upper())


def _names_chest(text: str) -> bool:
    return any(word.startswith(CHEST_WORD_PREFIXES) for word in _words(text))


def _names_other_region(text: str) -> str | None:
    for word in _words(text):
        if word in NOT_CHEST_WORDS or word.startswith(NOT_CHEST_WORD_PREFIXES):
            return word
    return None


def _check_descriptions(ds: Dataset) -> bool:
    """Refuse an object whose study or series description (or protocol) names a region other
    than the chest and not the chest too; True when the header names the chest anywhere."""
    says_chest = _names_chest(_text(ds, "BodyPartExamined"))
    for keyword in DESCRIPTION_KEYWORDS:
        text = _text(ds, keyword)
        if not text:
            continue
        if _names_chest(text):
            says_chest = True
            continue
        if _names_other_region(text):
            label = {"StudyDescription": "study", "SeriesDescription": "series", "ProtocolName": "protocol"}[keyword]
            raise ValidationError(
                f"This DICOM's {label} description is “{text[:80]}”, not a chest examination. XNET's models read "
                "chest images only.",
                code="dicom_not_chest",
            )
    return says_chest


def _flood(seed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Pixels of `allowed` 4-connected to `seed` (grown a ring at a time; the grid is small)."""
    region = seed & allowed
    while True:
        grown = region.copy()
        grown[1:, :] |= region[:-1, :]
        grown[:-1, :] |= region[1:, :]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown &= allowed
        if np.array_equal(grown, region):
            return region
        region = grown


def lung_air_fraction(hounsfield: np.ndarray, *, side: int = 128) -> float:
    """Share of a CT slice's cross-section that is air inside the body, as lungs are.

    A head CT has no lungs: in the lung window almost nothing inside the body is air. The slice
    is averaged down to at most `side` pixels a side (noise in outside air then stays under
    CT_OUTSIDE_AIR_HU); air connected to the image edge at under CT_OUTSIDE_AIR_HU is outside
    the patient (room air, the padding beyond the field of view, ~ -1000 HU and less), and what
    remains under CT_BODY_MIN_HU is air inside: lungs (about -850 HU), and also sinuses and bowel
    gas. A cropped chest slice whose lungs touch the edge keeps them, because lung tissue is
    above CT_OUTSIDE_AIR_HU. The fraction is that inside air over body plus inside air.

    Measured on the real CT slices of pydicom and pydicom-data, with this function:
      chest, CT_small.dcm (a 128 px crop around the spine, lungs at both edges)   21.9 %
      head, 693_UNCI.dcm / 693_UNCR.dcm / 693_J2KR.dcm (brain, no BodyPartExamined)  0.17 / 0.23 / 0.23 %
      skull base with sinuses and mastoid air, J2K_pixelrep_mismatch.dcm (HEAD)     4.9 %
      upper abdomen with bowel gas, explicit_VR-UN.dcm (PANCREAS)                  2.1 %
    CT_MIN_LUNG_AIR_FRACTION (1 %) sits four times above the head slices and twenty times below
    the chest slice. These packages hold one chest CT only; a slice below the lung bases or a
    skull base with large sinuses may fall on the wrong side, which is why the check runs only
    when the header names no body region (a chest or another region named there decides).
    """
    step = max(1, int(np.ceil(max(hounsfield.shape) / side)))
    rows, cols = (hounsfield.shape[0] // step) * step, (hounsfield.shape[1] // step) * step
    small = hounsfield[:rows, :cols].reshape(rows // step, step, cols // step, step).mean(axis=(1, 3))
    low = small < CT_BODY_MIN_HU
    edge = np.zeros_like(low)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    outside = _flood(edge & (small < CT_OUTSIDE_AIR_HU), low)
    inside_air = int((low & ~outside).sum())
    body = int((~low).sum())
    return inside_air / (body + inside_air) if body + inside_air else 0.0


def _check_chest_ct(values: np.ndarray) -> dict[str, Any]:
    """The measured check for a CT slice in Hounsfield units whose header names no region."""
    fraction = lung_air_fraction(values)
    if fraction < CT_MIN_LUNG_AIR_FRACTION:
        raise ValidationError(
            f"This CT slice does not look like the chest: only {fraction:.1%} of the body in it is air, where "
            f"a slice through the lungs has well over {CT_MIN_LUNG_AIR_FRACTION:.0%} (a head CT has almost "
            "none), and its header names no body part. XNET's CT model reads chest slices only.",
            code="dicom_not_chest",
        )
    return {"lung_air_fraction": round(fraction, 4), "threshold": CT_MIN_LUNG_AIR_FRACTION}


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


class _NotANumber(ValueError):
    """A numeric header element (DS) holds text that is not a number."""


def _number(ds: Dataset, keyword: str) -> float | None:
    """A decimal-string element as a float; None when absent or empty (common in real files);
    _NotANumber when it holds something else ("abc", "1,5")."""
    if keyword not in ds:
        return None
    value = _first(ds[keyword].value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _NotANumber(f"{keyword} {str(value)[:20]!r}") from None
    if not np.isfinite(number):
        raise _NotANumber(f"{keyword} {value!r}")
    return number


def _full_range(values: np.ndarray, note: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values, dtype=np.float64)
    window: dict[str, Any] = {"source": "full range", "min": low, "max": high}
    if note:
        window["note"] = note
    return scaled, window


def _voi_lut(ds: Dataset, values: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
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


def _window(ds: Dataset, values: np.ndarray, modality: str | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Values after the modality LUT -> 0..1, and a note of the window used.

    A damaged VOI LUT, or a window centre/width that is empty or not a number, falls back to the
    image's full range (noted in the header), as a viewer would: the pixels are still good.
    """
    if modality == Modality.CT:
        center, width = CT_LUNG_WINDOW["center"], CT_LUNG_WINDOW["width"]
        source = "lung window (CT default)"
    elif "VOILUTSequence" in ds:
        try:
            return _voi_lut(ds, values)
        except Exception:  # pydicom raises many types on a malformed table
            return _full_range(values, "the VOI LUT in the file is unreadable")
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            center_or_none, width_or_none = _number(ds, "WindowCenter"), _number(ds, "WindowWidth")
        except _NotANumber as exc:
            return _full_range(values, f"the window in the file is not a number ({exc})")
        if center_or_none is None or width_or_none is None:
            return _full_range(values, "the window in the file is empty")
        center, width = center_or_none, width_or_none
        source = "window centre/width from the file"
    else:
        return _full_range(values)
    width = max(width, 1.0)
    # The linear VOI function of PS3.3 C.11.2.1.2, to 0..1.
    scaled = np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0) if width > 1 else values > center
    return np.asarray(scaled, dtype=np.float64), {"source": source, "center": center, "width": width}


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, pydicom.multival.MultiValue) else value


def _stored_pixels(ds: Dataset, frame_index: int | None) -> np.ndarray:
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
    return stored


def _modality_values(ds: Dataset, stored: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Stored values -> modality values (Hounsfield units for CT), and what was applied.

    An empty rescale slope or intercept counts as absent (slope 1, intercept 0, the standard's
    defaults); a slope that is not a number falls back to 1, noted. An intercept that is not a
    number is refused: it shifts every value (for CT, where air and lung are), and no default
    would be right.
    """
    if "ModalityLUTSequence" in ds:
        try:
            return np.asarray(apply_modality_lut(stored, ds), dtype=np.float64), {"source": "modality LUT"}
        except Exception:
            raise ValidationError(
                "The DICOM's modality LUT is damaged; export the image again from the PACS.", code="dicom_corrupt"
            ) from None
    rescale: dict[str, Any] = {}
    try:
        slope = _number(ds, "RescaleSlope")
    except _NotANumber as exc:
        slope, rescale["note"] = None, f"rescale slope is not a number ({exc}); 1 used"
    if slope == 0:
        slope, rescale["note"] = None, "rescale slope is 0; 1 used"
    try:
        intercept = _number(ds, "RescaleIntercept")
    except _NotANumber as exc:
        raise ValidationError(
            f"The DICOM's rescale intercept is not a number ({exc}), so its pixel values cannot be read as "
            "the modality measured them. Export the image again from the PACS.",
            code="dicom_corrupt",
        ) from None
    slope = 1.0 if slope is None else slope
    intercept = 0.0 if intercept is None else intercept
    rescale.update(slope=slope, intercept=intercept)
    return stored.astype(np.float64) * slope + intercept, rescale


def _png(ds: Dataset, scaled: np.ndarray) -> bytes:
    if _text(ds, "PhotometricInterpretation") == "MONOCHROME1":
        scaled = 1.0 - scaled  # MONOCHROME1: the lowest value is white
    pixels = np.rint(scaled * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _in_hounsfield_units(ds: Dataset, rescale: dict[str, Any]) -> bool:
    """A CT object whose modality values are Hounsfield units: it carries a rescale intercept
    (the CT image IOD requires one) and no RescaleType other than HU."""
    rescale_type = _text(ds, "RescaleType").upper()
    return "intercept" in rescale and _text(ds, "RescaleIntercept") != "" and rescale_type in ("", "HU")


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
    names_chest = _check_descriptions(ds)
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
    values, rescale = _modality_values(ds, _stored_pixels(ds, frame_index))
    chest_check: dict[str, Any] = {}
    if _text(ds, "Modality").upper() in CT_MODALITIES and not names_chest and not _text(ds, "BodyPartExamined"):
        # The header names no body region: measure. Only Hounsfield units say what is air.
        if _in_hounsfield_units(ds, rescale):
            chest_check = _check_chest_ct(values)
        else:
            chest_check = {"skipped": "pixel values are not Hounsfield units"}
    scaled, window = _window(ds, values, modality)
    png = _png(ds, scaled)
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
        "rescale": rescale,
    }
    if chest_check:
        header["chest_check"] = chest_check
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


# The 16-bit rendition for the viewer ----------------------------------------------------------

# The tEXt keyword of a 16-bit rendition: "offset scale", so that value = png * scale + offset.
VALUES_TEXT_KEY = "xnet-values"


@dataclass(frozen=True)
class ModalityValuesPng:
    """The chosen frame's modality values (Hounsfield units for CT) as a 16-bit greyscale PNG."""

    png: bytes
    offset: float
    scale: float
    photometric: str


def modality_values_png(file: BinaryIO, *, frame_index: int | None) -> ModalityValuesPng:
    """The viewer's window/level works on these, not on the 8-bit PNG, so widening the window
    shows what the 8-bit copy clipped. Whole values that span at most 65,536 steps (every CT and
    nearly every radiograph) are stored exactly (offset = the minimum, scale 1); anything else
    (a fractional rescale slope, a modality LUT) is spread linearly over the 16 bits. Stored
    values are kept as they are: MONOCHROME1 is inverted by the viewer, as by any DICOM viewer.
    Raises ValidationError on a file read_dicom would have refused."""
    ds = _parse(file, force=True)
    values, _ = _modality_values(ds, _stored_pixels(ds, frame_index))
    low, high = float(np.floor(values.min())), float(values.max())
    whole = bool(np.all(values == np.rint(values)))
    if whole and high - low <= 65535:
        scale = 1.0
        pixels = (values - low).astype(np.uint16)
    else:
        scale = (high - low) / 65535.0 if high > low else 1.0
        pixels = np.rint((values - low) / scale).clip(0, 65535).astype(np.uint16)
    info = PngInfo()
    info.add_text(VALUES_TEXT_KEY, f"{low!r} {scale!r}")
    buffer = io.BytesIO()
    # Pillow writes mode I;16 as a 16-bit greyscale PNG (big-endian samples, as PNG requires).
    # zlib level 1: a third of level 6's time for 1.4 x the bytes (benchmarks/viewer.py).
    PILImage.fromarray(pixels.astype("<u2")).save(buffer, format="PNG", pnginfo=info, compress_level=1)
    return ModalityValuesPng(
        png=buffer.getvalue(), offset=low, scale=scale, photometric=_text(ds, "PhotometricInterpretation")
    )
