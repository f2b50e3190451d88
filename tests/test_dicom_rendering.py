"""Reading DICOM uploads (diagnosis.dicom through the upload inspection): pixels and header.

Real objects from pydicom's test data (a CR chest radiograph, CT, MR, ultrasound, RT plan, SR,
multi-frame, compressed) and objects written here with known pixel values.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from pydicom import dcmread
from pydicom.pixels import apply_modality_lut

from diagnosis.models import Modality
from diagnosis.uploads import inspect_upload
from tests.dicom_files import gradient, make_dicom, png_pixels, pydicom_file, rewrite


def inspect(data: bytes, *, frame: int | None = None):
    return inspect_upload(io.BytesIO(data), frame=frame)


def refusal(data: bytes, *, frame: int | None = None) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        inspect(data, frame=frame)
    return caught.value


# Real objects --------------------------------------------------------------------------------


def test_real_cr_chest_monochrome1_is_rendered_with_its_window_and_inverted():
    data = pydicom_file("RG1_UNCR.dcm")  # CR, CHEST, MONOCHROME1, 16-bit, window 15000/30000
    info = inspect(data)

    assert (info.format, info.width, info.height) == ("DICOM", 1841, 1955)
    assert info.size_bytes == len(data)
    found = info.dicom
    assert found.modality == Modality.XRAY
    assert found.frame_index is None
    header = found.header
    assert header["modality"] == "CR"
    assert header["body_part"] == "CHEST"
    assert header["photometric_interpretation"] == "MONOCHROME1"
    assert header["patient_id"] == "9RG1"
    assert header["window"] == {"source": "window centre/width from the file", "center": 15000.0, "width": 30000.0}
    assert found.sop_instance_uid == header["sop_instance_uid"] != ""
    assert header["study_instance_uid"]
    assert header["series_instance_uid"]

    stored = dcmread(io.BytesIO(data)).pixel_array
    rendered = png_pixels(found.png)
    assert rendered.shape == stored.shape
    # MONOCHROME1: the lowest stored value is the brightest; here the window spans 0..30000.
    darkest, brightest = (
        np.unravel_index(stored.argmin(), stored.shape),
        np.unravel_index(stored.argmax(), stored.shape),
    )
    expected_low = round((1 - np.clip((stored.min() - 14999.5) / 29999 + 0.5, 0, 1)) * 255)
    assert rendered[darkest] == expected_low
    assert rendered[darkest] > rendered[brightest]


def test_real_jpeg2000_cr_decodes_to_the_same_picture_as_uncompressed():
    plain = inspect(pydicom_file("RG1_UNCR.dcm")).dicom
    compressed = inspect(pydicom_file("RG1_J2KR.dcm")).dicom  # lossless JPEG 2000 of the same image
    assert compressed.header["transfer_syntax"] == "JPEG 2000 Image Compression (Lossless Only)"
    assert np.array_equal(png_pixels(compressed.png), png_pixels(plain.png))


def test_real_ct_gets_a_lung_window():
    data = pydicom_file("CT_small.dcm")
    found = inspect(data).dicom
    assert found.modality == Modality.CT
    assert found.header["window"] == {"source": "lung window (CT default)", "center": -600.0, "width": 1500.0}
    ds = dcmread(io.BytesIO(data))
    hu = apply_modality_lut(ds.pixel_array, ds)
    expected = np.rint(np.clip((hu - (-600 - 0.5)) / 1499 + 0.5, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(png_pixels(found.png), expected)


@pytest.mark.parametrize(
    ("name", "code", "words"),
    [
        ("MR_small.dcm", "dicom_wrong_modality", "an MR image (modality MR)"),
        ("US1_UNCR.dcm", "dicom_wrong_modality", "an ultrasound image (modality US)"),
        ("RG3_UNCR.dcm", "dicom_not_chest", "body part “EXTREMITY”, not the chest"),
        ("rtplan.dcm", "dicom_no_pixels", "(RT Plan Storage) has no image pixel data"),
        ("test-SR.dcm", "dicom_no_pixels", "(Comprehensive SR Storage) has no image pixel data"),
    ],
)
def test_real_objects_that_are_not_chest_images_are_refused(name, code, words):
    error = refusal(pydicom_file(name))
    assert error.code == code
    assert words in error.messages[0]


def test_real_multiframe_ct_needs_a_frame_and_renders_the_chosen_one():
    data = pydicom_file("eCT_Supplemental.dcm")  # enhanced CT, 2 frames
    error = refusal(data)
    assert error.code == "dicom_frame_required"
    assert error.messages == ["This DICOM has 2 frames (slices); choose which one to classify (frame 1 to 2)."]

    second = inspect(data, frame=2).dicom
    assert second.frame_index == 1
    assert second.header["number_of_frames"] == 2
    assert not np.array_equal(png_pixels(second.png), png_pixels(inspect(data, frame=1).dicom.png))

    error = refusal(data, frame=3)
    assert error.code == "dicom_frame_invalid"
    assert error.messages == ["Frame 3 does not exist in this DICOM: it has 2 frames (1 to 2)."]


def test_undecodable_compression_names_it_and_says_what_to_do():
    # pydicom's JPEG Lossless object, relabelled as a chest CR: nothing installed here decodes it.
    data = rewrite(pydicom_file("JPEG-LL.dcm"), Modality="CR", BodyPartExamined="CHEST")
    error = refusal(data)
    assert error.code == "dicom_unsupported_compression"
    assert "JPEG Lossless, Non-Hierarchical, First-Order Prediction" in error.messages[0]
    assert "Export the image uncompressed (Explicit VR Little Endian)" in error.messages[0]


def test_twelve_bit_jpeg_that_pillow_cannot_decode_is_refused_by_name():
    data = rewrite(pydicom_file("JPEG-lossy.dcm"), Modality="DX", BodyPartExamined="CHEST")
    error = refusal(data)
    assert error.code == "dicom_unsupported_compression"
    assert "compressed as JPEG Extended (Process 2 and 4)" in error.messages[0]


def test_colour_object_is_refused():
    data = rewrite(pydicom_file("US1_UNCR.dcm"), Modality="CR")  # an RGB ultrasound frame, relabelled
    error = refusal(data)
    assert error.code == "dicom_not_greyscale"
    assert "colour image (RGB)" in error.messages[0]


def test_real_truncated_pixel_data_is_refused():
    data = rewrite(pydicom_file("MR_truncated.dcm"), Modality="CR")  # pixel data 62 bytes short
    error = refusal(data)
    assert error.code == "dicom_corrupt"
    assert "truncated or damaged" in error.messages[0]


# Objects written here ---------------------------------------------------------------------


def test_header_fields_are_read():
    found = inspect(make_dicom(view_position="AP", patient_name="Doe^Jane^Q", sex="F")).dicom
    header = found.header
    assert header["modality"] == "DX"
    assert header["view_position"] == "AP"
    assert (header["patient_id"], header["patient_name"]) == ("MRN-1001", "Jane Q Doe")
    assert (header["patient_birth_date"], header["patient_sex"], header["study_date"]) == (
        "1980-01-02",
        "F",
        "2026-03-12",
    )
    assert found.patient.birth_date.isoformat() == "1980-01-02"
    assert found.patient.sex == "F"


def test_monochrome1_minimum_renders_white_and_maximum_black():
    rendered = png_pixels(inspect(make_dicom(photometric="MONOCHROME1")).dicom.png)
    assert rendered[0, 0] == 255  # stored 0
    assert rendered[-1, -1] == 0  # stored 4095


def test_monochrome2_without_window_spans_the_full_range():
    rendered = png_pixels(inspect(make_dicom()).dicom.png)
    assert (rendered[0, 0], rendered[-1, -1]) == (0, 255)


def test_sixteen_bit_values_are_scaled_not_wrapped():
    pixels = np.full((80, 80), 0, dtype=np.uint16)
    pixels[40:, :] = 65535
    pixels[20:40, :] = 32768
    rendered = png_pixels(inspect(make_dicom(pixels, bits_stored=16)).dicom.png)
    assert (rendered[0, 0], rendered[30, 0], rendered[60, 0]) == (0, 128, 255)


def test_window_centre_and_width_are_applied():
    pixels = np.zeros((80, 80), dtype=np.uint16)
    pixels[:, 20:40], pixels[:, 40:60], pixels[:, 60:] = 750, 1000, 1250
    found = inspect(make_dicom(pixels, window=(1000, 500))).dicom
    rendered = png_pixels(found.png)
    assert (rendered[0, 0], rendered[0, 20], rendered[0, 60]) == (0, 0, 255)
    assert rendered[0, 40] == 128  # the centre is mid-grey
    assert found.header["window"]["source"] == "window centre/width from the file"


def test_rescale_comes_before_the_window():
    # stored 500 -> 2*500 - 1000 = 0, the window's centre; stored 400 -> -200, below it.
    pixels = np.full((80, 80), 500, dtype=np.uint16)
    pixels[:40] = 400
    rendered = png_pixels(inspect(make_dicom(pixels, rescale=(2, -1000), window=(0, 200))).dicom.png)
    assert (rendered[0, 0], rendered[79, 0]) == (0, 128)


def test_voi_lut_is_applied():
    # A table for stored values 100..103 -> 0, 1000, 3000, 4000; others clamp to its ends.
    pixels = np.full((80, 80), 100, dtype=np.uint16)
    pixels[:, 20:40], pixels[:, 40:60], pixels[:, 60:] = 101, 102, 500
    found = inspect(make_dicom(pixels, voi_lut=(100, [0, 1000, 3000, 4000]))).dicom
    rendered = png_pixels(found.png)
    assert [rendered[0, x] for x in (0, 20, 40, 60)] == [0, 64, 191, 255]
    assert found.header["window"] == {"source": "VOI LUT"}


def test_ct_written_in_hounsfield_units_uses_the_lung_window():
    # Stored values with intercept -1024: -1024 HU dark grey, -600 HU mid-grey, 150 HU white.
    pixels = np.zeros((80, 80), dtype=np.uint16)
    pixels[:, :20], pixels[:, 20:40], pixels[:, 40:] = 0, 424, 1174
    data = make_dicom(pixels, modality="CT", body_part="CHEST", rescale=(1, -1024), window=(40, 400))
    found = inspect(data).dicom
    rendered = png_pixels(found.png)
    air = round(((-1024 + 600.5) / 1499 + 0.5) * 255)  # -1024 HU is inside the window (-1350..150)
    assert (rendered[0, 0], rendered[0, 20], rendered[0, 40]) == (air, 128, 255)
    assert found.modality == Modality.CT


def test_chosen_frame_of_a_written_multiframe_object():
    frames = np.stack([np.full((80, 80), value, dtype=np.uint16) for value in (0, 1000, 4000)])
    data = make_dicom(frames, window=(2000, 4000))
    assert "has 3 frames" in refusal(data).messages[0]
    rendered = png_pixels(inspect(data, frame=2).dicom.png)
    assert rendered[0, 0] == round((1000 - 1999.5) / 3999 * 255 + 127.5)


def test_a_dicom_without_the_part10_preamble_is_read():
    found = inspect(make_dicom(preamble=False)).dicom
    assert found.header["patient_id"] == "MRN-1001"


@pytest.mark.parametrize(
    ("data", "frame", "code", "words"),
    [
        (make_dicom(body_part="ABDOMEN"), None, "dicom_not_chest", "body part “ABDOMEN”, not the chest"),
        (make_dicom(gradient(32, 200)), None, "too_small", "only 200x32 pixels; at least 64"),
        (make_dicom(modality="MR"), None, "dicom_wrong_modality", "an MR image"),
        (make_dicom(modality="XC"), None, "dicom_wrong_modality", "a photograph"),
        (make_dicom(), 2, "dicom_frame_invalid", "it has a single frame (frame 1)"),
        (make_dicom()[:-500], None, "dicom_corrupt", "truncated or damaged"),
        (make_dicom()[:300], None, "dicom_corrupt", "ends before its pixel data"),
    ],
    ids=["abdomen", "too-small", "mr", "photo", "no-such-frame", "truncated-pixels", "truncated-header"],
)
def test_written_objects_refused_with_a_reason(data, frame, code, words):
    error = refusal(data, frame=frame)
    assert error.code == code
    assert words in error.messages[0]


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # real files write "Thorax" in lower case
def test_chest_body_part_spellings_are_accepted():
    for body_part in ("CHEST", "Thorax", "LUNG", "", None):
        assert inspect(make_dicom(body_part=body_part)).format == "DICOM"
