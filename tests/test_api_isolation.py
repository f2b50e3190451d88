"""Department isolation over every endpoint: B's user never sees A's objects.

Another department's object is a 404 (as if it did not exist), never a 403 that would confirm
it exists. Each check is paired with A's own user getting the object, so a broken URL cannot
pass as "isolated".
"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from diagnosis.models import Case, Image, InferenceJob
from tests.factories import CaseFactory, PatientFactory, PredictionFactory, png_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def a_objects(radiologist):
    """One of each of department A's objects."""
    patient = PatientFactory(department=radiologist.department, created_by=radiologist, mrn="A-SECRET")
    case = CaseFactory(patient=patient, created_by=radiologist)
    prediction = PredictionFactory(job__image__case=case)
    job = prediction.job
    return {"patient": patient, "case": case, "image": job.image, "job": job, "prediction": prediction}


def _detail_urls(objs) -> dict[str, str]:
    return {
        "patient": f"/api/v1/patients/{objs['patient'].pk}/",
        "case": f"/api/v1/cases/{objs['case'].pk}/",
        "image": f"/api/v1/images/{objs['image'].pk}/",
        "image file": f"/api/v1/images/{objs['image'].pk}/file/",
        "job": f"/api/v1/jobs/{objs['job'].pk}/",
        "prediction": f"/api/v1/predictions/{objs['prediction'].pk}/",
    }


@pytest.mark.parametrize("kind", ["patient", "case", "image", "image file", "job", "prediction"])
def test_other_department_gets_404(api, outsider_api, a_objects, kind):
    url = _detail_urls(a_objects)[kind]
    assert api.get(url).status_code == 200
    response = outsider_api.get(url)
    assert response.status_code == 404
    assert response.json()["error"] == {"status": 404, "code": "not_found", "message": "Not found.", "fields": {}}


def test_upload_to_other_departments_case_is_404_and_writes_nothing(outsider_api, a_objects, settings):
    before = (Image.objects.count(), InferenceJob.objects.count())
    response = outsider_api.post(
        f"/api/v1/cases/{a_objects['case'].pk}/images/", {"file": SimpleUploadedFile("x.png", png_bytes())}
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert (Image.objects.count(), InferenceJob.objects.count()) == before
    stored = {str(settings.MEDIA_ROOT / image.file.name) for image in Image.objects.all()}
    assert {str(p) for p in settings.MEDIA_ROOT.rglob("*") if p.is_file()} == stored


def test_case_for_other_departments_patient_is_unknown(outsider_api, a_objects):
    response = outsider_api.post(
        "/api/v1/cases/", {"patient": a_objects["patient"].pk, "modality": "xray"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"patient": ["Unknown patient."]}
    assert Case.objects.count() == 1


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("/api/v1/patients/", {}),
        ("/api/v1/patients/", {"mrn": "A-SECRET"}),
        ("/api/v1/cases/", {}),
        ("/api/v1/cases/", {"mrn": "A-SECRET"}),
        ("/api/v1/cases/", {"status": "succeeded"}),
        ("/api/v1/cases/", {"patient": "PATIENT"}),
    ],
)
def test_lists_never_include_other_departments_objects(api, outsider_api, outsider, a_objects, url, params):
    params = {k: a_objects["patient"].pk if v == "PATIENT" else v for k, v in params.items()}
    own_patient = PatientFactory(department=outsider.department, created_by=outsider, mrn="B-1")
    own_case = CaseFactory(patient=own_patient, created_by=outsider)
    a_ids = {a_objects["patient"].pk} if "patients" in url else {a_objects["case"].pk}

    assert {item["id"] for item in api.get(url, params).json()["results"]} == a_ids
    body = outsider_api.get(url, params).json()
    ids = {item["id"] for item in body["results"]}
    assert not ids & a_ids
    if not params:
        assert ids == {own_patient.pk if "patients" in url else own_case.pk}
