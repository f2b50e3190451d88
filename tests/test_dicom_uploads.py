"""DICOM uploads through the REST API and the services: storage, patient, routing, refusals, worker.

POST /api/v1/cases/<id>/images/ takes a DICOM beside PNG/JPEG; POST /api/v1/cases/from-dicom/
creates a case whose patient comes from the DICOM.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from diagnosis import services
from diagnosis.models import Case, Image, InferenceJob, Modality, Patient
from tests.conftest import media_files
from tests.dicom_files import gradient, make_dicom, png_pixels, pydicom_file, rewrite, upload
from tests.factories import CaseFactory, PatientFactory, png_bytes

pytestmark = pytest.mark.django_db

FROM_DICOM_URL = "/api/v1/cases/from-dicom/"


@pytest.fixture
def patient(radiologist):
    # The person make_dicom() names: Doe^Jane, born 1980-01-02, female.
    return PatientFactory(
        department=radiologist.department,
        created_by=radiologist,
        mrn="MRN-1001",
        name="Jane Doe",
        birth_date=date(1980, 1, 2),
        sex=Patient.Sex.FEMALE,
    )


@pytest.fixture
def xray_case(patient, radiologist):
    return CaseFactory(patient=patient, created_by=radiologist, modality=Modality.XRAY)


@pytest.fixture
def ct_case(patient, radiologist):
    return CaseFactory(patient=patient, created_by=radiologist, modality=Modality.CT)


def post_image(api, case, data: bytes, name: str = "chest.dcm", **fields):
    return api.post(f"/api/v1/cases/{case.pk}/images/", {"file": upload(data, name), **fields}, format="multipart")


def assert_nothing_written(settings) -> None:
    assert not Image.objects.exists()
    assert not InferenceJob.objects.exists()
    assert media_files(settings.MEDIA_ROOT) == []


# Storing a DICOM ------------------------------------------------------------------------------


def test_dicom_upload_keeps_the_original_privately_and_stores_a_rendered_png(api, xray_case, settings):
    data = make_dicom(photometric="MONOCHROME1", view_position="AP")
    response = post_image(api, xray_case, data, name="Doe_Jane.dcm")

    assert response.status_code == 202, response.content
    image = Image.objects.get()
    body = response.json()["image"]
    assert (body["format"], body["width"], body["height"], body["modality"]) == ("DICOM", 80, 96, "xray")
    assert body["frame"] is None
    assert body["sop_instance_uid"] == image.sop_instance_uid != ""
    assert body["dicom"]["view_position"] == "AP"
    assert image.dicom["patient_id"] == "MRN-1001"
    assert image.dicom["patient_name"] == "Jane Doe"
    assert image.dicom["body_part"] == "CHEST"
    assert image.dicom["study_date"] == "2026-03-12"
    assert image.format == Image.Format.DICOM
    with image.file.open("rb") as handle:
        assert handle.read() == data  # the original object, byte for byte
    assert "Doe" not in image.file.name
    assert "Doe" not in image.rendered.name
    assert sorted(media_files(settings.MEDIA_ROOT)) == sorted(
        [settings.MEDIA_ROOT / image.file.name, settings.MEDIA_ROOT / image.rendered.name]
    )

    # The file endpoint sends the rendered PNG, never the DICOM.
    response = api.get(body["file"])
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Content-Disposition"].endswith(f'filename="image-{image.pk}.png"')
    sent = b"".join(response.streaming_content)
    assert sent.startswith(b"\x89PNG")
    assert b"DICM" not in sent
    pixels = png_pixels(sent)
    assert (pixels[0, 0], pixels[-1, -1]) == (255, 0)  # MONOCHROME1: the stored minimum is white


def test_case_detail_lists_dicom_header_of_its_images(api, xray_case):
    post_image(api, xray_case, make_dicom())
    image = api.get(f"/api/v1/cases/{xray_case.pk}/").json()["images"][0]
    assert image["format"] == "DICOM"
    assert image["dicom"]["modality"] == "DX"


def test_image_open_gives_the_worker_the_rendered_png(radiologist, xray_case):
    job = services.image_upload(case=xray_case, file=upload(make_dicom()), uploaded_by=radiologist)
    with services.image_open(image=job.image) as handle:
        assert png_pixels(handle.read()).shape == (96, 80)


# Patient -------------------------------------------------------------------------------------


def test_dicom_of_another_patient_is_refused_naming_both(api, xray_case, settings):
    data = make_dicom(patient_id="MRN-2002", patient_name="Roe^Richard")
    response = post_image(api, xray_case, data)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "patient_mismatch"
    assert error["fields"]["file"] == [
        "chest.dcm: this DICOM belongs to patient Richard Roe (patient ID MRN-2002), but this case is for Jane Doe "
        "(record number MRN-1001). Nothing was stored; upload it to that patient's case."
    ]
    assert_nothing_written(settings)


def test_dicom_without_patient_id_is_accepted_in_a_case(api, xray_case):
    assert post_image(api, xray_case, make_dicom(patient_id="")).status_code == 202


# Routing by modality ------------------------------------------------------------------------


def test_ct_dicom_in_an_xray_case_needs_confirmation(api, xray_case, settings, django_capture_on_commit_callbacks):
    data = make_dicom(modality="CT", rescale=(1, -1024))
    response = post_image(api, xray_case, data)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "modality_mismatch"
    message = error["fields"]["file"][0]
    assert "this DICOM is a CT image (CT) but this is an X-ray case. Nothing was stored." in message
    assert "confirm_modality=true in the API" in message
    assert_nothing_written(settings)

    with django_capture_on_commit_callbacks(execute=False):
        response = post_image(api, xray_case, data, confirm_modality="true")
    assert response.status_code == 202, response.content
    image = Image.objects.get()
    assert image.modality == Modality.CT  # the CT model and the ct queue
    assert image.case.modality == Modality.XRAY
    assert response.json()["image"]["modality"] == "ct"


def test_xray_dicom_in_a_ct_case_goes_to_the_xray_model_only_when_confirmed(radiologist, ct_case, settings):
    with pytest.raises(services.ValidationError) as caught:
        services.image_upload(case=ct_case, file=upload(make_dicom()), uploaded_by=radiologist)
    assert caught.value.code == "modality_mismatch"
    assert_nothing_written(settings)
    job = services.image_upload(case=ct_case, file=upload(make_dicom()), uploaded_by=radiologist, confirm_modality=True)
    assert job.image.modality == Modality.XRAY


def test_secondary_capture_takes_the_case_modality(api, ct_case):
    response = post_image(api, ct_case, make_dicom(modality="OT"))
    assert response.status_code == 202
    assert Image.objects.get().modality == Modality.CT


# Multi-frame --------------------------------------------------------------------------------


def test_multiframe_dicom_frame_choice(api, xray_case, settings):
    frames = np.stack([np.full((80, 80), value, dtype=np.uint16) for value in (0, 2000, 4000)])
    data = make_dicom(frames, window=(2000, 4000))

    response = post_image(api, xray_case, data)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "dicom_frame_required"
    assert "has 3 frames (slices); choose which one to classify (frame 1 to 3)" in response.json()["error"]["message"]
    assert_nothing_written(settings)

    response = post_image(api, xray_case, data, frame=4)
    assert response.status_code == 400
    assert "Frame 4 does not exist in this DICOM: it has 3 frames (1 to 3)." in response.json()["error"]["message"]
    assert_nothing_written(settings)

    response = post_image(api, xray_case, data, frame=0)
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["frame"]
    assert_nothing_written(settings)

    response = post_image(api, xray_case, data, frame=3)
    assert response.status_code == 202
    image = Image.objects.get()
    assert (image.frame_index, response.json()["image"]["frame"]) == (2, 3)
    with image.rendered.open("rb") as handle:
        assert png_pixels(handle.read())[0, 0] == 255  # frame 3 holds the brightest value


# Refusals ------------------------------------------------------------------------------------

BAD_DICOM = {
    "rt plan (no pixels)": (lambda: pydicom_file("rtplan.dcm"), "dicom_no_pixels"),
    "structured report": (lambda: pydicom_file("test-SR.dcm"), "dicom_no_pixels"),
    "mr": (lambda: pydicom_file("MR_small.dcm"), "dicom_wrong_modality"),
    "ultrasound": (lambda: pydicom_file("US1_UNCR.dcm"), "dicom_wrong_modality"),
    "extremity radiograph": (lambda: pydicom_file("RG3_UNCR.dcm"), "dicom_not_chest"),
    "abdomen": (lambda: make_dicom(body_part="ABDOMEN"), "dicom_not_chest"),
    "undecodable jpeg lossless": (
        lambda: rewrite(pydicom_file("JPEG-LL.dcm"), Modality="CR", BodyPartExamined="CHEST", PatientID="MRN-1001"),
        "dicom_unsupported_compression",
    ),
    "truncated": (lambda: make_dicom()[:-700], "dicom_corrupt"),
    "too small": (lambda: make_dicom(gradient(40, 40)), "too_small"),
}


@pytest.mark.parametrize("bad", BAD_DICOM.values(), ids=BAD_DICOM.keys())
def test_bad_dicom_is_400_with_a_reason_and_writes_nothing(api, xray_case, settings, bad):
    make, code = bad
    response = post_image(api, xray_case, make())
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"].startswith("file: chest.dcm: ")
    assert_nothing_written(settings)


def test_a_bad_dicom_among_good_files_rejects_all(radiologist, xray_case, settings, chest_xray_bytes):
    files = [upload(make_dicom()), upload(chest_xray_bytes, "c.jpg"), upload(make_dicom(modality="MR"), "mr.dcm")]
    with pytest.raises(services.ValidationError) as caught:
        services.images_upload(case=xray_case, files=files, uploaded_by=radiologist)
    assert caught.value.messages[0].startswith("mr.dcm: This DICOM is an MR image")
    assert_nothing_written(settings)


# A new case from a DICOM -------------------------------------------------------------------


def test_from_dicom_registers_the_patient_from_the_header(api, radiologist):
    data = make_dicom(patient_id="P-77", patient_name="Curie^Marie", birth_date="19671107", sex="F")
    response = api.post(FROM_DICOM_URL, {"file": upload(data), "indication": "Cough."}, format="multipart")

    assert response.status_code == 201, response.content
    patient = Patient.objects.get()
    assert (patient.mrn, patient.name, patient.birth_date.isoformat(), patient.sex) == (
        "P-77",
        "Marie Curie",
        "1967-11-07",
        "F",
    )
    assert patient.department == radiologist.department
    case = Case.objects.get()
    assert (case.patient, case.modality, case.indication) == (patient, Modality.XRAY, "Cough.")
    assert response["Location"] == f"http://testserver/api/v1/cases/{case.pk}/"
    body = response.json()
    assert body["case"] == response["Location"]
    assert body["job"]["status"] == "pending"
    assert body["image"]["dicom"]["patient_id"] == "P-77"


def test_from_dicom_matches_a_patient_of_the_department_only(api, radiologist, outsider, patient):
    other = PatientFactory(department=outsider.department, created_by=outsider, mrn="MRN-1001", name="Someone Else")
    response = api.post(FROM_DICOM_URL, {"file": upload(make_dicom(modality="CT"))}, format="multipart")
    assert response.status_code == 201, response.content
    case = Case.objects.get()
    assert case.patient == patient  # the department's own patient with this record number
    assert case.modality == Modality.CT
    assert Patient.objects.count() == 2
    assert not other.cases.exists()


def test_from_dicom_secondary_capture_needs_a_modality(api, settings):
    response = api.post(FROM_DICOM_URL, {"file": upload(make_dicom(modality="SC"))}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["modality"] == [
        "The DICOM does not say whether it is an X-ray or a CT (modality OT/SC); choose one."
    ]
    assert not Patient.objects.exists()
    assert not Case.objects.exists()
    assert_nothing_written(settings)

    response = api.post(
        FROM_DICOM_URL, {"file": upload(make_dicom(modality="SC")), "modality": "xray"}, format="multipart"
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: pydicom_file("MR_small.dcm"), "dicom_wrong_modality"),
        (lambda: pydicom_file("rtplan.dcm"), "dicom_no_pixels"),
        (lambda: make_dicom(patient_id=""), "dicom_no_patient_id"),
        (lambda: make_dicom(patient_name=""), "dicom_no_patient_name"),
        (png_bytes, "not_dicom"),
        (lambda: make_dicom()[:300], "dicom_corrupt"),
    ],
    ids=["mr", "rt-plan", "no-patient-id", "no-name", "not-dicom", "truncated"],
)
def test_from_dicom_refusals_leave_no_patient_case_or_file(api, settings, make, code):
    response = api.post(FROM_DICOM_URL, {"file": upload(make())}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert not Patient.objects.exists()
    assert not Case.objects.exists()
    assert_nothing_written(settings)


def test_from_dicom_for_another_modality_needs_confirmation(api, settings):
    data = make_dicom(modality="CT")
    response = api.post(FROM_DICOM_URL, {"file": upload(data), "modality": "xray"}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "modality_mismatch"
    assert not Patient.objects.exists()
    assert_nothing_written(settings)


def test_from_dicom_requires_login(client):
    response = client.post(FROM_DICOM_URL, {"file": upload(make_dicom())})
    assert response.status_code in (401, 403)
    assert not Patient.objects.exists()


# The worker ---------------------------------------------------------------------------------


def test_worker_classifies_the_rendered_png_of_a_dicom(radiologist, xray_case, installed_models):
    data = pydicom_file("RG1_UNCR.dcm")  # a real CR chest radiograph
    xray_case.patient.mrn = "9RG1"
    xray_case.patient.save()
    job = services.image_upload(case=xray_case, file=upload(data), uploaded_by=radiologist)
    services.job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == InferenceJob.Status.SUCCEEDED, job.error_message
    assert (job.model_name, job.model_version) == ("xray-tiny", "1.0.0")
    assert set(job.prediction.probabilities) == {"normal", "pneumonia", "covid", "tuberculosis"}


def test_worker_sends_a_confirmed_ct_dicom_to_the_ct_model(radiologist, xray_case, installed_models):
    data = rewrite(pydicom_file("CT_small.dcm"), PatientID="MRN-1001")
    job = services.image_upload(case=xray_case, file=upload(data), uploaded_by=radiologist, confirm_modality=True)
    services.job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == InferenceJob.Status.SUCCEEDED, job.error_message
    assert job.model_name == "ct-tiny"
    assert set(job.prediction.probabilities) == {"covid", "non_covid"}


def test_png_uploads_are_unchanged(api, xray_case, chest_xray_bytes):
    response = post_image(api, xray_case, chest_xray_bytes, name="c.jpg")
    assert response.status_code == 202
    image = Image.objects.get()
    assert (image.format, image.rendered.name, image.dicom) == ("JPEG", "", {})
    assert api.get(f"/api/v1/images/{image.pk}/file/")["Content-Type"] == "image/jpeg"
    with services.image_open(image=image) as handle:
        assert handle.read() == chest_xray_bytes
