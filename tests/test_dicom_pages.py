"""DICOM on the pages: new case (patient from the DICOM), adding images, the rendered PNG shown,
and every refusal as a 400 page with its reason and nothing written."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest
from django.urls import reverse

from diagnosis.models import Case, Image, InferenceJob, Modality, Patient
from tests.conftest import media_files
from tests.dicom_files import make_dicom, png_pixels, pydicom_file, upload
from tests.factories import CaseFactory, PatientFactory, png_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def patient(radiologist):
    return PatientFactory(department=radiologist.department, created_by=radiologist, mrn="MRN-1001", name="Jane Doe")


@pytest.fixture
def case(patient, radiologist):
    return CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)


def page_text(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode())))


def assert_nothing_written(settings) -> None:
    assert not Image.objects.exists()
    assert not InferenceJob.objects.exists()
    assert media_files(settings.MEDIA_ROOT) == []


def add_images(client, case, *files, **fields):
    return client.post(reverse("case_upload", args=[case.pk]), {"images": list(files), **fields})


def new_case(client, *files, **fields):
    data = {"patient_mode": "dicom", "mrn": "", "modality": "xray", "indication": "", "images": list(files)}
    data.update(fields)
    return client.post(reverse("case_create"), data)


# Adding a DICOM to a case ---------------------------------------------------------------------


def test_dicom_added_to_a_case_is_shown_as_the_rendered_png(rad_client, case):
    response = add_images(rad_client, case, upload(make_dicom(photometric="MONOCHROME1")))
    assert response.status_code == 302
    image = Image.objects.get()

    page = rad_client.get(reverse("case_detail", args=[case.pk]))
    # The viewer loads the rendered PNG (and, for window/level, the modality values).
    assert f'data-image-url="{reverse("image_file", args=[image.pk])}"' in page.content.decode()
    assert f'data-pixels-url="{reverse("image_pixels", args=[image.pk])}"' in page.content.decode()
    assert "80×96 DICOM" in page_text(page)

    response = rad_client.get(reverse("image_file", args=[image.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    pixels = png_pixels(b"".join(response.streaming_content))
    assert (pixels[0, 0], pixels[-1, -1]) == (255, 0)  # MONOCHROME1 inverted


def test_rendered_png_of_another_department_is_404(rad_client, client, outsider, case):
    add_images(rad_client, case, upload(make_dicom()))
    image = Image.objects.get()
    client.force_login(outsider)
    assert client.get(reverse("image_file", args=[image.pk])).status_code == 404


def test_wrong_patient_is_refused_on_the_case_page(rad_client, case, settings):
    response = add_images(rad_client, case, upload(make_dicom(patient_id="X-9", patient_name="Roe^Rita"), "scan.dcm"))
    assert response.status_code == 400
    text = page_text(response)
    assert (
        "scan.dcm: this DICOM belongs to patient Rita Roe (patient ID X-9), but this case is for Jane Doe "
        "(record number MRN-1001)." in text
    )
    assert f"Case #{case.pk}" in text
    assert_nothing_written(settings)


def test_ct_dicom_in_an_xray_case_needs_the_box_ticked(rad_client, case, settings):
    data = make_dicom(modality="CT")
    response = add_images(rad_client, case, upload(data))
    assert response.status_code == 400
    assert "this DICOM is a CT image (CT) but this is an X-ray case" in page_text(response)
    assert "Use the DICOM's modality" in page_text(response)
    assert_nothing_written(settings)

    response = add_images(rad_client, case, upload(data), confirm_modality="on")
    assert response.status_code == 302
    assert Image.objects.get().modality == Modality.CT


def test_multiframe_dicom_needs_a_frame_on_the_page(rad_client, case, settings):
    frames = np.stack([np.full((80, 80), value, dtype=np.uint16) for value in (0, 4000)])
    data = make_dicom(frames, window=(2000, 4000))
    response = add_images(rad_client, case, upload(data, "series.dcm"))
    assert response.status_code == 400
    assert "series.dcm: This DICOM has 2 frames (slices); choose which one to classify (frame 1 to 2)." in page_text(
        response
    )
    assert_nothing_written(settings)

    response = add_images(rad_client, case, upload(data), frame="5")
    assert response.status_code == 400
    assert "Frame 5 does not exist in this DICOM: it has 2 frames (1 to 2)." in page_text(response)
    assert_nothing_written(settings)

    response = add_images(rad_client, case, upload(data), frame="0")
    assert response.status_code == 400
    assert "Frames are counted from 1." in page_text(response)

    assert add_images(rad_client, case, upload(data), frame="2").status_code == 302
    assert Image.objects.get().frame_index == 1


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: pydicom_file("rtplan.dcm"), "(RT Plan Storage) has no image pixel data"),
        (lambda: pydicom_file("MR_small.dcm"), "This DICOM is an MR image (modality MR)"),
        (lambda: make_dicom(body_part="KNEE"), "body part “KNEE”, not the chest"),
        (lambda: make_dicom()[:-900], "truncated or damaged"),
    ],
    ids=["rt-plan", "mr", "knee", "truncated"],
)
def test_bad_dicom_is_a_400_case_page(rad_client, case, settings, make, words):
    response = add_images(rad_client, case, upload(make()))
    assert response.status_code == 400
    assert words in page_text(response)
    assert_nothing_written(settings)


# A new case whose patient comes from the DICOM -------------------------------------------------


def test_new_case_form_offers_the_dicom_choices(rad_client):
    text = rad_client.get(reverse("case_create")).content.decode()
    assert 'value="dicom"' in text
    assert 'name="frame"' in text
    assert 'name="confirm_modality"' in text
    assert ".dcm" in text


def test_new_case_registers_the_patient_from_the_dicom_then_matches_it(rad_client, radiologist):
    data = make_dicom(patient_id="P-42", patient_name="Hodgkin^Dorothy", birth_date="19100512", sex="F")
    response = new_case(rad_client, upload(data))
    assert response.status_code == 302, page_text(response)
    patient = Patient.objects.get()
    assert (patient.mrn, patient.name, str(patient.birth_date), patient.sex) == (
        "P-42",
        "Dorothy Hodgkin",
        "1910-05-12",
        "F",
    )
    assert patient.department == radiologist.department
    assert response["Location"] == reverse("case_detail", args=[Case.objects.get().pk])

    # The same person again (the name as another modality spells it) is filed under her; a DICOM
    # whose identity disagrees is refused (tests/test_dicom_identity.py).
    same = make_dicom(patient_id="P-42", patient_name="HODGKIN^DOROTHY", birth_date="19100512", sex="F")
    assert new_case(rad_client, upload(same)).status_code == 302
    assert Patient.objects.count() == 1
    assert Case.objects.filter(patient=patient).count() == 2


@pytest.mark.parametrize(
    ("files", "words"),
    [
        (lambda: [upload(png_bytes(), "chest.png")], "chest.png is not a DICOM file"),
        (lambda: [upload(pydicom_file("MR_small.dcm"))], "This DICOM is an MR image"),
        (
            lambda: [upload(make_dicom(patient_id="A")), upload(make_dicom(patient_id="B"), "b.dcm")],
            "The DICOM files belong to different patients (patient IDs A, B)",
        ),
        (lambda: [upload(make_dicom(patient_id=""))], "A DICOM file has no patient ID"),
        (lambda: [upload(make_dicom(modality="CT"))], "this DICOM is a CT image (CT) but this is an X-ray case"),
    ],
    ids=["png", "mr", "two-patients", "no-patient-id", "ct-in-xray-case"],
)
def test_new_case_from_dicom_refusals_leave_nothing(rad_client, settings, files, words):
    response = new_case(rad_client, *files())
    assert response.status_code == 400
    assert words in page_text(response)
    assert not Patient.objects.exists()
    assert not Case.objects.exists()
    assert_nothing_written(settings)


def test_new_case_for_a_known_patient_refuses_a_dicom_of_someone_else(rad_client, patient, settings):
    data = {
        "patient_mode": "existing",
        "mrn": "MRN-1001",
        "modality": "xray",
        "images": [upload(make_dicom(patient_id="Z-1"))],
    }
    response = rad_client.post(reverse("case_create"), data)
    assert response.status_code == 400
    assert "belongs to patient Jane Doe (patient ID Z-1), but this case is for Jane Doe" in page_text(response)
    assert not Case.objects.exists()
    assert_nothing_written(settings)


def test_existing_patient_mode_still_needs_a_record_number(rad_client, settings):
    response = rad_client.post(
        reverse("case_create"),
        {"patient_mode": "existing", "mrn": "", "modality": "xray", "images": [upload(png_bytes())]},
    )
    assert response.status_code == 400
    assert "Enter the medical record number." in page_text(response)
    assert_nothing_written(settings)


def test_new_case_takes_the_modality_from_the_dicom_when_asked(rad_client):
    response = new_case(rad_client, upload(make_dicom(modality="CT")), modality="")
    assert response.status_code == 302, page_text(response)
    case = Case.objects.get()
    assert case.modality == Modality.CT
    assert case.images.get().modality == Modality.CT


def test_the_dicom_modality_choice_is_for_dicom_patients_only(rad_client, patient, settings):
    data = {"patient_mode": "existing", "mrn": "MRN-1001", "modality": "", "images": [upload(png_bytes())]}
    response = rad_client.post(reverse("case_create"), data)
    assert response.status_code == 400
    assert "Choose the examination's modality." in page_text(response)
    assert not Case.objects.exists()
    assert_nothing_written(settings)
