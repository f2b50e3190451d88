"""The DICOM objects XNET sends back into a study: an SR of the AI result, a secondary capture
with the heatmap burned in, and the signed report as Encapsulated PDF.

Each carries new UIDs fixed on its Delivery (a retry sends the same instance) and references
the source instance's study; patient and study attributes are copied from the received object.
"""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pydicom
from django.conf import settings
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from diagnosis.models import Image, Prediction
from ml.labels import display_name

MANUFACTURER = "XNET"
DISCLAIMER = "AI result, not for diagnosis alone"
SERIES_NUMBERS = {"sr": 9901, "sc": 9902, "pdf": 9903}
ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
FALLBACK_INTENDED_USE = (
    "Second-reader triage of chest images. Not for diagnosis alone: a radiologist reads every image."
)

# Codes: DCM where the standard has one (algorithm name/version, finding), XNET's private
# scheme (99XNET) for the rest.
TITLE = hd.sr.CodedConcept("18748-4", "LN", "Diagnostic imaging report")
FINDING = hd.sr.CodedConcept("121071", "DCM", "Finding")
ALGORITHM_NAME = hd.sr.CodedConcept("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = hd.sr.CodedConcept("111003", "DCM", "Algorithm Version")
PERCENT = hd.sr.CodedConcept("%", "UCUM", "Percent")
INTENDED_USE = hd.sr.CodedConcept("INTENDED-USE", "99XNET", "Intended use")
NOTICE = hd.sr.CodedConcept("NOTICE", "99XNET", "Notice")


def source_dataset(image: Image) -> Dataset:
    """The received DICOM's header (no pixels): patient, study and series the result refers to."""
    with image.file.open("rb") as handle:
        ds = pydicom.dcmread(handle, stop_before_pixels=True, force=True)
    # Type 2 patient and study attributes (present, may be empty) that many modalities leave out
    # and the derived objects must carry.
    for keyword in TYPE2_KEYWORDS:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


TYPE2_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def intended_use(model_name: str, model_version: str) -> str:
    from ml.registry import find_model

    spec = find_model(settings.XNET_MODEL_DIR, model_name, model_version)
    text = (spec.card.get("intended_use") if spec else "") or ""
    return str(text) or FALLBACK_INTENDED_USE


def _probability_name(label: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(f"P-{label.upper()[:12]}", "99XNET", f"Probability of {display_name(label)}")


def build_sr(*, prediction: Prediction, source: Dataset, series_uid: str, sop_uid: str) -> Dataset:
    """A Comprehensive SR: the finding, every class's probability, the model and its intended use."""
    items = [
        hd.sr.TextContentItem(
            name=FINDING,
            value=f"{display_name(prediction.top_label)} ({prediction.top_probability:.0%})",
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    ]
    for label, probability in prediction.ranked():
        items.append(
            hd.sr.NumContentItem(
                name=_probability_name(label),
                value=round(float(probability) * 100.0, 2),
                unit=PERCENT,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    items += [
        hd.sr.TextContentItem(
            name=ALGORITHM_NAME, value=prediction.model_name, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
        ),
        hd.sr.TextContentItem(
            name=ALGORITHM_VERSION,
            value=prediction.model_version,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        ),
        hd.sr.TextContentItem(
            name=INTENDED_USE,
            value=intended_use(prediction.model_name, prediction.model_version),
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        ),
        hd.sr.TextContentItem(name=NOTICE, value=DISCLAIMER, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS),
    ]
    root = hd.sr.ContainerContentItem(name=TITLE)
    root.ContentSequence = hd.sr.ContentSequence(items)
    sr = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=root,
        series_instance_uid=series_uid,
        series_number=SERIES_NUMBERS["sr"],
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    sr.SeriesDescription = "XNET AI result"
    return sr


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType
        return ImageFont.load_default()


def heatmap_capture_pixels(*, prediction: Prediction) -> np.ndarray:
    """The image as classified, the heatmap over it in red-yellow, and a banner with the notice
    and the finding in the pixels themselves (a viewer shows no overlay text of ours)."""
    image = prediction.job.image
    with (image.rendered or image.file).open("rb") as handle, PILImage.open(handle) as picture:
        base = picture.convert("L").convert("RGB")
    if prediction.heatmap:
        with prediction.heatmap.open("rb") as handle, PILImage.open(handle) as heat_picture:
            heat = np.asarray(heat_picture.convert("L").resize(base.size, PILImage.BILINEAR), dtype=np.float64) / 255
        pixels = np.asarray(base, dtype=np.float64)
        colour = np.stack([np.ones_like(heat), heat, np.zeros_like(heat)], axis=-1) * 255.0  # red -> yellow
        alpha = (0.55 * heat)[..., None]
        base = PILImage.fromarray(np.rint(pixels * (1 - alpha) + colour * alpha).astype(np.uint8), "RGB")
    width, height = base.size
    size = max(10, width // 28)
    banner = size * 2 + 12
    canvas = PILImage.new("RGB", (width, height + banner), (0, 0, 0))
    canvas.paste(base, (0, banner))
    draw = ImageDraw.Draw(canvas)
    font = _font(size)
    draw.text((6, 4), DISCLAIMER, fill=(255, 255, 0), font=font)
    model = f"{prediction.model_name} {prediction.model_version}"
    finding = f"{display_name(prediction.top_label)} {prediction.top_probability:.0%} - {model}"
    draw.text((6, 6 + size), finding, fill=(255, 255, 255), font=font)
    return np.asarray(canvas, dtype=np.uint8)


def build_sc(*, prediction: Prediction, source: Dataset, series_uid: str, sop_uid: str) -> Dataset:
    pixels = heatmap_capture_pixels(prediction=prediction)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_uid,
        series_number=SERIES_NUMBERS["sc"],
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    sc.SeriesDescription = "XNET AI heatmap (not for diagnosis alone)"
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = DISCLAIMER
    _reference_source(sc, source)
    return sc


def _reference_source(ds: Dataset, source: Dataset) -> None:
    """Source Image Sequence: which received instance this object was derived from."""
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    ds.SourceImageSequence = [ref]


PATIENT_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)


def build_pdf(*, pdf: bytes, source: Dataset, series_uid: str, sop_uid: str, title: str) -> Dataset:
    """Encapsulated PDF IOD (PS3.3 A.45.1) in the source study."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for keyword in PATIENT_STUDY_KEYWORDS:
        ds.setdefault(keyword, source.get(keyword, ""))
    from django.utils import timezone

    now = timezone.now()
    ds.SOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "DOC"
    ds.SeriesNumber = SERIES_NUMBERS["pdf"]
    ds.InstanceNumber = 1
    ds.SeriesDescription = "XNET signed report"
    ds.Manufacturer = MANUFACTURER
    ds.ConversionType = "WSD"
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = title[:64]
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    ds.SourceInstanceSequence = [ref]
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
