"""The DICOM intake refuses what it can tell is not the chest: by the study or series description
where the header has one, and for CT in Hounsfield units by measuring it (a head has no lungs).

Before, a head CT without BodyPartExamined (pydicom-data's 693_UNCI.dcm) was accepted into a chest
CT case and classified.
"""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.pixels import apply_modality_lut

from diagnosis.dicom import CT_MIN_LUNG_AIR_FRACTION, lung_air_fraction
from diagnosis.models import Case, Image, Modality, Patient
from tests.conftest import media_files
from tests.dicom_files import make_dicom, pydicom_file, rewrite, upload
from tests.factories import CaseFactory, PatientFactory

pytestmark = pytest.mark.django_db

HEAD_CTS = ("693_UNCI.dcm", "693_UNCR.dcm", "693_J2KR.dcm")  # brain slices, no BodyPartExamined
CHEST_CT = "CT_small.dcm"  # an axial slice through the chest: spine, aorta, both lungs


def hounsfield(name: str):
    ds = dcmread(io.BytesIO(pydicom_file(name)))
    return apply_modality_lut(ds.pixel_array, ds)


@pytest.fixture
def ct_case(radiologist) -> Case:
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, mrn="MRN-1001")
    return CaseFactory(patient=patient, created_by=radiologist, modality=Modality.CT)


def post(api, case, data: bytes):
    return api.post(f"/api/v1/cases/{case.pk}/images/", {"file": upload(data)}, format="multipart")


# The measured check --------------------------------------------------------------------------


def test_lung_air_separates_the_head_slices_from_the_chest_slice():
    """The figures documented in diagnosis.dicom.lung_air_fraction, measured again."""
    heads = [lung_air_fraction(hounsfield(name)) for name in HEAD_CTS]
    chest = lung_air_fraction(hounsfield(CHEST_CT))
    assert max(heads) < 0.003
    assert chest > 0.2
    assert max(heads) * 4 < CT_MIN_LUNG_AIR_FRACTION < chest / 20


@pytest.mark.parametrize("name", HEAD_CTS)
def test_head_ct_without_body_part_is_refused(api, ct_case, settings, name):
    ds = dcmread(io.BytesIO(pydicom_file(name)))
    assert "BodyPartExamined" not in ds
    response = post(api, ct_case, rewrite(pydicom_file(name), PatientID="MRN-1001"))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "dicom_not_chest"
    assert "This CT slice does not look like the chest" in error["message"]
    assert not Image.objects.exists()
    assert media_files(settings.MEDIA_ROOT) == []


def test_head_ct_is_refused_by_the_from_dicom_intake_too(api, settings):
    response = api.post("/api/v1/cases/from-dicom/", {"file": upload(pydicom_file("693_UNCI.dcm"))})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "dicom_not_chest"
    assert not Patient.objects.exists()
    assert not Case.objects.exists()


def test_chest_ct_without_body_part_is_accepted_with_its_measurement(api, ct_case):
    response = post(api, ct_case, rewrite(pydicom_file(CHEST_CT), PatientID="MRN-1001"))
    assert response.status_code == 202, response.content
    check = response.json()["image"]["dicom"]["chest_check"]
    assert check["lung_air_fraction"] > 0.2
    assert check["threshold"] == CT_MIN_LUNG_AIR_FRACTION


def test_ct_whose_header_names_the_chest_is_not_measured(api, ct_case):
    data = rewrite(pydicom_file("693_UNCI.dcm"), PatientID="MRN-1001", BodyPartExamined="CHEST")
    response = post(api, ct_case, data)
    assert response.status_code == 202  # the header decides when it says; the model's gate still runs
    assert "chest_check" not in response.json()["image"]["dicom"]


# Descriptions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("element", "text"),
    [
        ("SeriesDescription", "CT HEAD W/O CONTRAST"),
        ("StudyDescription", "Brain^Routine"),
        ("StudyDescription", "ABD/PELVIS"),
        ("SeriesDescription", "KNEE LAT"),
        ("ProtocolName", "Schaedel nativ"),
    ],
)
def test_non_chest_description_is_refused(api, ct_case, element, text):
    data = rewrite(make_dicom(modality="CT", body_part=None), **{element: text})
    response = post(api, ct_case, data)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "dicom_not_chest"
    assert f"“{text}”, not a chest examination" in error["message"]
    assert not Image.objects.exists()


def test_non_chest_description_refuses_an_xray_too(api, radiologist):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, mrn="MRN-1001")
    case = CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)
    response = post(api, case, rewrite(make_dicom(body_part=None), StudyDescription="XR SKULL 2 VIEWS"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "dicom_not_chest"


@pytest.mark.parametrize("text", ["CT CHEST ABDOMEN PELVIS", "Thorax^HR", "LUNG SCREENING", "CTPA"])
def test_description_naming_the_chest_is_accepted(api, ct_case, text):
    response = post(api, ct_case, rewrite(make_dicom(modality="CT", body_part=None), SeriesDescription=text))
    assert response.status_code == 202, response.content


def test_description_without_a_region_leaves_it_to_the_measurement(api, ct_case):
    # 693's own series description, "5/5mm Plain", names no region: measured, refused.
    data = rewrite(pydicom_file("693_UNCR.dcm"), PatientID="MRN-1001")
    assert dcmread(io.BytesIO(data)).SeriesDescription == "5/5mm Plain"
    assert post(api, ct_case, data).json()["error"]["code"] == "dicom_not_chest"
