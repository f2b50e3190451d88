"""The from-dicom intake files a DICOM under a registered patient only when the identity agrees.

Before, a PatientID match alone was enough: a DICOM naming another person (other name, birth date
and sex) was filed under the registered patient.
"""

from __future__ import annotations

from datetime import date

import pytest
from django.urls import reverse

from diagnosis.models import Case, Image, Patient
from tests.conftest import media_files
from tests.dicom_files import make_dicom, upload
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db

FROM_DICOM_URL = "/api/v1/cases/from-dicom/"


@pytest.fixture
def jane(radiologist) -> Patient:
    return PatientFactory(
        department=radiologist.department,
        created_by=radiologist,
        mrn="MRN-1001",
        name="Jane Doe",
        birth_date=date(1980, 1, 2),
        sex=Patient.Sex.FEMALE,
    )


def from_dicom(api, data: bytes):
    return api.post(FROM_DICOM_URL, {"file": upload(data)}, format="multipart")


@pytest.mark.parametrize(
    ("fields", "differences"),
    [
        ({"patient_name": "Roe^Richard", "birth_date": "19550607", "sex": "M"}, "name and birth date and sex"),
        ({"patient_name": "Roe^Richard"}, "name"),
        ({"birth_date": "19800201"}, "birth date"),
        ({"sex": "M"}, "sex"),
    ],
    ids=["everything", "name", "birth-date", "sex"],
)
def test_a_patient_id_match_with_another_identity_is_refused(api, jane, settings, fields, differences):
    response = from_dicom(api, make_dicom(patient_id="MRN-1001", **fields))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "patient_identity_mismatch"
    message = error["message"]
    assert "Record number MRN-1001 is registered in your department as Jane Doe, born 1980-01-02, sex female" in message
    assert f"the {differences} disagree. Nothing was stored." in message
    assert not Case.objects.exists()
    assert not Image.objects.exists()
    assert Patient.objects.count() == 1
    assert media_files(settings.MEDIA_ROOT) == []


def test_the_message_names_the_dicoms_identity(api, jane):
    data = make_dicom(patient_id="MRN-1001", patient_name="Roe^Richard", birth_date="19550607", sex="M")
    message = from_dicom(api, data).json()["error"]["message"]
    assert "this DICOM (patient ID MRN-1001) names Richard Roe, born 1955-06-07, sex male" in message


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"patient_name": "DOE^JANE"},
        {"patient_name": "Doe^Jane^Anne"},  # a middle name the registration left out
        {"birth_date": "", "sex": "O"},  # what one side does not say is not compared
        {"sex": ""},
    ],
    ids=["same", "upper-case", "middle-name", "unknown-birth-date-other-sex", "no-sex"],
)
def test_the_same_person_is_matched(api, jane, fields):
    response = from_dicom(api, make_dicom(patient_id="MRN-1001", **fields))
    assert response.status_code == 201, response.content
    assert Case.objects.get().patient == jane


def test_the_new_case_page_shows_the_refusal(rad_client, jane):
    data = make_dicom(patient_id="MRN-1001", patient_name="Roe^Richard", birth_date="19550607", sex="M")
    response = rad_client.post(
        reverse("case_create"), {"patient_mode": "dicom", "modality": "", "images": [upload(data)]}
    )
    assert response.status_code == 400
    text = response.content.decode()
    assert "is registered in your department as Jane Doe" in text
    assert "names Richard Roe" in text
    assert not Case.objects.exists()
