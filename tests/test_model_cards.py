"""Model cards: the page a result links to, its figures, and the API's link to it."""

import json
import shutil

import pytest
from django.urls import reverse
from PIL import Image as PILImage

from accounts.models import Department
from diagnosis import services
from tests.factories import (
    CaseFactory,
    ImageFactory,
    InferenceJobFactory,
    PatientFactory,
    PredictionFactory,
    speaking_models,
)

pytestmark = pytest.mark.django_db

CARD = """# xray-tiny 1.0.0

| class | sensitivity |
|---|---|
| normal | 91.0 % |
"""


@pytest.fixture
def carded_models(settings, model_dir, tmp_path):
    """The tiny models, the X-ray one with a CARD.md and one figure, as training/report.py writes them."""
    folder = tmp_path / "models"
    shutil.copytree(model_dir, folder)
    (folder / "xray-tiny" / "CARD.md").write_text(CARD)
    PILImage.new("RGB", (40, 30), "white").save(folder / "xray-tiny" / "roc_curves.png")
    settings.XNET_MODEL_DIR = folder
    for department in Department.objects.all():
        speaking_models(department)  # the tiny models speak, as installed_models does it
    return folder


def test_card_page_shows_the_card(rad_client, carded_models):
    response = rad_client.get(reverse("model_card", args=["xray-tiny", "1.0.0"]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "xray-tiny" in html
    assert "Software tests only: an untrained network with random weights." in html  # intended use
    assert "<td>91.0 %</td>" in html  # the Markdown table, rendered
    assert reverse("model_card_figure", args=["xray-tiny", "1.0.0", "roc_curves.png"]) in html
    assert "confusion_matrix.png" not in html  # only figures the folder has


def test_card_page_says_where_training_started(rad_client, carded_models):
    import json

    meta_path = carded_models / "xray-tiny" / "model.json"
    url = reverse("model_card", args=["xray-tiny", "1.0.0"])
    assert "trained from scratch" in rad_client.get(url).content.decode()  # no starting point recorded

    meta = json.loads(meta_path.read_text())
    meta["pretrained"] = True
    meta["starting_point"] = "transfer learning from xray-compact 1.0.0 (xray, trained on ../shared/data)"
    meta_path.write_text(json.dumps(meta))
    html = rad_client.get(url).content.decode()
    assert "transfer learning from xray-compact 1.0.0" in html
    assert "ImageNet" not in html


def test_card_of_an_older_version_points_to_the_model_in_use(rad_client, carded_models):
    import json

    newer = carded_models / "xray-tiny-2"
    shutil.copytree(carded_models / "xray-tiny", newer)
    meta = json.loads((newer / "model.json").read_text())
    meta["version"] = "1.1.0"
    (newer / "model.json").write_text(json.dumps(meta))

    old_card = rad_client.get(reverse("model_card", args=["xray-tiny", "1.0.0"])).content.decode()
    assert "New XRAY uploads are classified by" in old_card
    assert reverse("model_card", args=["xray-tiny", "1.1.0"]) in old_card
    new_card = rad_client.get(reverse("model_card", args=["xray-tiny", "1.1.0"])).content.decode()
    assert "New XRAY uploads are classified by" not in new_card


def test_card_figure_is_served(rad_client, carded_models):
    response = rad_client.get(reverse("model_card_figure", args=["xray-tiny", "1.0.0", "roc_curves.png"]))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")


@pytest.mark.parametrize("figure", ["model.keras", "model.json", "confusion_matrix.png"])
def test_only_card_figures_the_folder_has(rad_client, carded_models, figure):
    response = rad_client.get(reverse("model_card_figure", args=["xray-tiny", "1.0.0", figure]))
    assert response.status_code == 404


def test_card_of_a_model_not_installed_is_404_with_a_reason(rad_client, carded_models):
    response = rad_client.get(reverse("model_card", args=["xray-tiny", "0.9.0"]))
    assert response.status_code == 404


def test_card_without_card_file_says_so(rad_client, carded_models):
    response = rad_client.get(reverse("model_card", args=["ct-tiny", "1.0.0"]))
    assert response.status_code == 200
    assert "This model folder has no CARD.md." in response.content.decode()


def test_card_needs_login(client, carded_models):
    response = client.get(reverse("model_card", args=["xray-tiny", "1.0.0"]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_case_page_links_each_result_to_its_models_card(rad_client, radiologist, carded_models):
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    case = CaseFactory(patient=patient, created_by=radiologist)
    job = InferenceJobFactory(image=ImageFactory(case=case), status="succeeded", model_name="xray-tiny")
    PredictionFactory(job=job, model_name="xray-tiny", model_version="1.0.0")
    html = rad_client.get(reverse("case_detail", args=[case.pk])).content.decode()
    assert f'href="{reverse("model_card", args=["xray-tiny", "1.0.0"])}"' in html


def test_api_lists_installed_models_with_their_cards(api, carded_models):
    response = api.get("/api/v1/models/")
    assert response.status_code == 200
    models = {(item["name"], item["version"]): item for item in response.json()}
    assert set(models) == {("xray-tiny", "1.0.0"), ("ct-tiny", "1.0.0")}
    xray = models["xray-tiny", "1.0.0"]
    assert xray["modality"] == "xray"
    assert xray["classes"] == ["normal", "pneumonia", "covid", "tuberculosis"]
    assert xray["card_url"] == "http://testserver/models/xray-tiny/1.0.0/"
    assert xray["intended_use"] == "Software tests only: an untrained network with random weights."


def test_api_lists_a_model_whose_metrics_could_not_be_computed(api, carded_models):
    """model.json written by older versions holds NaN (a class with no test images): read as null, never a 500."""
    meta_file = carded_models / "xray-tiny" / "model.json"
    meta = json.loads(meta_file.read_text())
    meta["metrics"] = {"test": {"per_class": {"tuberculosis": {"sensitivity": float("nan"), "auc": float("nan")}}}}
    meta_file.write_text(json.dumps(meta))
    assert "NaN" in meta_file.read_text()

    response = api.get("/api/v1/models/")

    assert response.status_code == 200
    xray = next(item for item in response.json() if item["name"] == "xray-tiny")
    assert xray["metrics"]["test"]["per_class"]["tuberculosis"] == {"sensitivity": None, "auc": None}
    assert xray["external_validation"] == ""
    assert xray["leave_one_source_out"] is None


def test_model_json_is_written_as_strict_json(tmp_path):
    from ml.registry import write_model_json

    write_model_json(tmp_path / "model.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": 0.5}})
    assert json.loads((tmp_path / "model.json").read_text()) == {"a": None, "b": [1.0, None], "c": {"d": 0.5}}


def test_api_models_needs_authentication(client, carded_models):
    assert client.get("/api/v1/models/").status_code == 401


def test_job_links_the_card_of_the_model_that_ran(api, radiologist, chest_xray_bytes, carded_models):
    from django.core.files.uploadedfile import SimpleUploadedFile

    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    case = CaseFactory(patient=patient, created_by=radiologist)
    job = services.image_upload(case=case, file=SimpleUploadedFile("c.jpg", chest_xray_bytes), uploaded_by=radiologist)
    services.job_run(job_id=job.pk)
    body = api.get(f"/api/v1/jobs/{job.pk}/").json()
    assert body["prediction"]["model_card_url"] == "http://testserver/models/xray-tiny/1.0.0/"
