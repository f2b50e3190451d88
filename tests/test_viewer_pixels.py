"""The viewer's 16-bit rendition of a DICOM's modality values (images/<id>/pixels/): exact values,
rendered once into private storage, department-scoped, none for PNG/JPEG uploads."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image as PILImage

from diagnosis import pixels, services
from diagnosis.dicom import VALUES_TEXT_KEY, modality_values_png
from diagnosis.models import Modality
from tests.dicom_files import gradient, make_dicom, pydicom_file, upload
from tests.factories import CaseFactory, PatientFactory, png_bytes

pytestmark = pytest.mark.django_db


def decoded(data: bytes) -> np.ndarray:
    """Modality values back from a rendition, as the browser's decoder computes them."""
    image = PILImage.open(io.BytesIO(data))
    assert (image.format, image.mode) == ("PNG", "I;16")
    offset, scale = (float(part) for part in image.info[VALUES_TEXT_KEY].split())
    return np.asarray(image).astype(np.float64) * scale + offset


def test_whole_values_are_kept_exactly_even_where_the_8_bit_copy_clips():
    values = gradient(high=4095)
    data = make_dicom(values, window=(1000, 500))  # the 8-bit copy is black below 750, white above 1250
    rendition = modality_values_png(io.BytesIO(data), frame_index=None)
    assert np.array_equal(decoded(rendition.png), values.astype(np.float64))
    assert rendition.scale == 1.0


def test_ct_hounsfield_units_with_negative_values():
    values = gradient(high=3000).astype(np.int16)
    data = make_dicom(values, modality="CT", rescale=(1, -1024), signed=True, bits_stored=16)
    back = decoded(modality_values_png(io.BytesIO(data), frame_index=None).png)
    assert back.min() == -1024
    assert back.max() == 3000 - 1024
    assert np.array_equal(back, values.astype(np.float64) - 1024)


def test_fractional_slope_spreads_over_16_bits():
    values = gradient(high=4095)
    data = make_dicom(values, rescale=(0.37, 5.5))
    back = decoded(modality_values_png(io.BytesIO(data), frame_index=None).png)
    expected = values * 0.37 + 5.5
    assert np.abs(back - expected).max() <= (expected.max() - expected.min()) / 65535  # one 16-bit step


def test_the_real_ct_slice_of_pydicom():
    from pydicom import dcmread

    data = pydicom_file("CT_small.dcm")
    ds = dcmread(io.BytesIO(data))
    back = decoded(modality_values_png(io.BytesIO(data), frame_index=None).png)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.array_equal(back, expected)


@pytest.fixture
def dicom_image(radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, mrn="MRN-1001", name="Jane Doe")
    case = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)
    data = make_dicom(gradient(high=4095), window=(1000, 500))
    return services.image_upload(case=case, file=upload(data), uploaded_by=radiologist).image


def test_endpoint_serves_the_rendition_once_rendered(rad_client, dicom_image):
    url = reverse("image_pixels", args=[dicom_image.pk])
    response = rad_client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Cache-Control"] == "private, no-store"
    first = b"".join(response.streaming_content)
    assert np.array_equal(decoded(first), gradient(high=4095).astype(np.float64))
    storage = dicom_image.file.storage
    name = pixels.pixels_name(dicom_image)
    assert storage.exists(name)
    stamp = storage.get_modified_time(name)
    again = b"".join(rad_client.get(url).streaming_content)
    assert again == first
    assert storage.get_modified_time(name) == stamp  # served from storage, not rendered again


def test_endpoint_is_department_scoped_and_needs_login(client, dicom_image, outsider):
    url = reverse("image_pixels", args=[dicom_image.pk])
    assert client.get(url).status_code == 302  # to the login page
    client.force_login(outsider)
    assert client.get(url).status_code == 404
    assert not dicom_image.file.storage.exists(pixels.pixels_name(dicom_image))


def test_png_uploads_have_no_rendition(rad_client, radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    case = CaseFactory(patient=patient, created_by=radiologist)
    image = services.image_upload(
        case=case, file=SimpleUploadedFile("chest.png", png_bytes()), uploaded_by=radiologist
    ).image
    assert rad_client.get(reverse("image_pixels", args=[image.pk])).status_code == 404
