"""DICOM objects the tests write with pydicom, and pydicom's own test files.

Written in memory, so each test states the pixel values and header it needs: a chest DX with a
window, a VOI LUT, rescale, MONOCHROME1, 16 bits, several frames, a wrong body part, damage.
"""

from __future__ import annotations

import io

import numpy as np
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root, for test UIDs


def pydicom_file(name: str) -> bytes:
    """One of the files that pydicom and pydicom-data ship for testing (real CT, CR, MR...)."""
    path = get_testdata_file(name)
    assert path is not None, f"{name} is not in pydicom's test data"
    with open(path, "rb") as handle:
        return handle.read()


def gradient(rows: int = 96, cols: int = 80, *, high: int = 4095) -> np.ndarray:
    """A ramp from 0 (top-left) to `high` (bottom-right): every value appears, min and max known."""
    ramp = np.linspace(0, high, rows * cols)
    return np.rint(ramp).astype(np.uint16).reshape(rows, cols)


def make_dicom(
    pixels: np.ndarray | None = None,
    *,
    modality: str = "DX",
    body_part: str | None = "CHEST",
    view_position: str = "PA",
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    signed: bool = False,
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    voi_lut: tuple[int, list[int]] | None = None,
    patient_id: str = "MRN-1001",
    patient_name: str = "Doe^Jane",
    birth_date: str = "19800102",
    sex: str = "F",
    preamble: bool = True,
) -> bytes:
    """A DICOM object with these pixel values (rows x cols, or frames x rows x cols) and header."""
    pixels = gradient() if pixels is None else pixels
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    sop_class = CTImageStorage if modality == "CT" else DigitalXRayImageStorageForPresentation
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid(UID_ROOT)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(UID_ROOT)
    ds.SeriesInstanceUID = generate_uid(UID_ROOT)
    ds.Modality = modality
    if body_part is not None:
        ds.BodyPartExamined = body_part
    ds.ViewPosition = view_position
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    ds.StudyDate = "20260312"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "HU" if modality == "CT" else "US"
    if voi_lut is not None:
        first_value, table = voi_lut
        item = Dataset()
        item.LUTDescriptor = [len(table), first_value, 16]
        item.add_new(0x00283006, "US", table)  # LUT Data
        ds.VOILUTSequence = Sequence([item])
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()

    buffer = io.BytesIO()
    if preamble:
        ds.save_as(buffer, enforce_file_format=True)
    else:
        del ds.file_meta
        ds.save_as(buffer, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def rewrite(data: bytes, **elements) -> bytes:
    """A copy of a DICOM object with some header elements changed (keyword=value)."""
    ds = dcmread(io.BytesIO(data))
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def upload(data: bytes, name: str = "chest.dcm") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/dicom")


def png_pixels(data: bytes) -> np.ndarray:
    image = PILImage.open(io.BytesIO(data))
    assert (image.format, image.mode) == ("PNG", "L")
    return np.asarray(image)
