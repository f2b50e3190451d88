"""Malformed numeric DICOM header elements: a fallback or a dicom_corrupt refusal, never a 500.

Before, an empty window centre/width, a non-numeric window and a non-numeric rescale slope all
answered 500 on the page and in the API. Empty elements are common in real files.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from django.urls import reverse

from diagnosis.models import Image, Modality
from tests.dicom_files import gradient, make_dicom, png_pixels, upload
from tests.factories import CaseFactory, PatientFactory

pytestmark = pytest.mark.django_db

MARKER, OTHER_MARKER = 98765.4, 87654.3  # numbers written where the damage goes, then overwritten


def damaged(data: bytes, value: bytes, marker_value: float = MARKER) -> bytes:
    """`data` with the element that holds the marker overwritten by `value` (padded, same length):
    pydicom refuses to write such values, real devices do not."""
    marker = f"{marker_value} ".encode()
    assert data.count(marker) == 1
    return data.replace(marker, value.ljust(len(marker)))


def zero_length(data: bytes, *keywords: str) -> bytes:
    """`data` with these elements present but empty (zero length)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword in keywords:
        ds[keyword].value = None
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


PIXELS = gradient()  # 0..4095, every value present: the full range maps 0 -> 0 and 4095 -> 255

FALLBACKS = {
    "empty window (zero length)": (
        lambda: zero_length(make_dicom(PIXELS, window=(2000, 4000)), "WindowCenter", "WindowWidth"),
        "the window in the file is empty",
    ),
    "empty window (spaces)": (
        lambda: damaged(damaged(make_dicom(PIXELS, window=(MARKER, OTHER_MARKER)), b""), b"", OTHER_MARKER),
        "the window in the file is empty",
    ),
    "non-numeric window centre": (
        lambda: damaged(make_dicom(PIXELS, window=(MARKER, 4000)), b"abc"),
        "the window in the file is not a number (WindowCenter 'abc')",
    ),
    "non-numeric window width": (
        lambda: damaged(make_dicom(PIXELS, window=(2000, MARKER)), b"wide"),
        "the window in the file is not a number (WindowWidth 'wide')",
    ),
}


def post(api, case, data: bytes):
    return api.post(f"/api/v1/cases/{case.pk}/images/", {"file": upload(data)}, format="multipart")


@pytest.fixture
def case(radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, mrn="MRN-1001")
    return CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)


@pytest.mark.parametrize(("make", "note"), FALLBACKS.values(), ids=FALLBACKS.keys())
def test_unusable_window_falls_back_to_the_full_range(api, case, make, note):
    response = post(api, case, make())

    assert response.status_code == 202, response.content
    window = response.json()["image"]["dicom"]["window"]
    assert window["source"] == "full range"
    assert window["note"] == note
    with Image.objects.get().rendered.open("rb") as handle:
        rendered = png_pixels(handle.read())
    assert (rendered.min(), rendered.max()) == (0, 255)


def test_non_numeric_rescale_slope_falls_back_to_one(api, case):
    data = damaged(make_dicom(PIXELS, rescale=(MARKER, -100)), b"abc")
    response = post(api, case, data)

    assert response.status_code == 202, response.content
    rescale = response.json()["image"]["dicom"]["rescale"]
    assert rescale == {
        "slope": 1.0,
        "intercept": -100.0,
        "note": "rescale slope is not a number (RescaleSlope 'abc'); 1 used",
    }
    assert response.json()["image"]["dicom"]["window"]["min"] == -100.0  # 0 * 1 - 100


def test_empty_rescale_counts_as_absent(api, case):
    data = zero_length(make_dicom(PIXELS, rescale=(2, -100)), "RescaleSlope", "RescaleIntercept")
    response = post(api, case, data)
    assert response.status_code == 202, response.content
    assert response.json()["image"]["dicom"]["rescale"] == {"slope": 1.0, "intercept": 0.0}


def test_non_numeric_rescale_intercept_is_refused_as_corrupt(api, case, settings):
    response = post(api, case, damaged(make_dicom(PIXELS, rescale=(1, MARKER)), b"n/a"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "dicom_corrupt"
    assert "rescale intercept is not a number (RescaleIntercept 'n/a')" in error["message"]
    assert not Image.objects.exists()


def test_ct_with_non_numeric_slope_keeps_the_lung_window(api, radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, mrn="MRN-1001")
    case = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.CT)
    pixels = np.full((80, 80), 1024 - 600, dtype=np.uint16)  # -600 HU: the lung window's centre
    data = damaged(make_dicom(pixels, modality="CT", rescale=(MARKER, -1024)), b"?")
    response = post(api, case, data)
    assert response.status_code == 202, response.content
    with Image.objects.get().rendered.open("rb") as handle:
        assert png_pixels(handle.read())[0, 0] == 128


@pytest.mark.parametrize(
    "data",
    [
        damaged(make_dicom(PIXELS, window=(MARKER, 4000)), b"abc"),
        damaged(make_dicom(PIXELS, rescale=(MARKER, 0)), b"abc"),
        zero_length(make_dicom(PIXELS, window=(2000, 4000)), "WindowCenter", "WindowWidth"),
    ],
    ids=["non-numeric window", "non-numeric slope", "empty window"],
)
def test_the_case_page_takes_them_too(rad_client, case, data):
    response = rad_client.post(reverse("case_upload", args=[case.pk]), {"images": [upload(data)]})
    assert response.status_code == 302
    assert Image.objects.filter(case=case).count() == 1


def test_the_page_shows_the_intercept_refusal(rad_client, case):
    data = damaged(make_dicom(PIXELS, rescale=(1, MARKER)), b"n/a")
    response = rad_client.post(reverse("case_upload", args=[case.pk]), {"images": [upload(data)]})
    assert response.status_code == 400
    assert "rescale intercept is not a number" in response.content.decode()
