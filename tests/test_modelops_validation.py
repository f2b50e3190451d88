"""Local validation (modelops): a version's results against this department's signed labels, on
data with known counts; the page for department admins, beside the assistive version; who may see it.

Model folders here are real model.json files (the shipped X-ray model's, renamed) beside an empty
model.keras: validation and drift read only the card, never the network.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone
from pytest_django.asserts import assertContains

from diagnosis.model_status import deployment_set_status
from diagnosis.models import InferenceJob, ModelDeployment
from modelops import metrics as M
from modelops import selectors
from reviews.models import Report
from tests.factories import (
    CaseFactory,
    DepartmentAdminFactory,
    DepartmentFactory,
    ImageFactory,
    InferenceJobFactory,
    PatientFactory,
    PredictionFactory,
    TOTPDeviceFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "ml/models/xray-mobilenetv2-2.0.0/model.json"
OLD, NEW = ("cxr-old", "1.0.0"), ("cxr-new", "2.0.0")
CLASSES = ["normal", "pneumonia", "covid", "tuberculosis"]
S = InferenceJob.Status


def write_model_folder(root: Path, name: str, version: str) -> None:
    meta = json.loads(SHIPPED.read_text())
    meta.update(name=name, version=version)
    folder = root / f"{name}-{version}"
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps(meta))
    (folder / "model.keras").write_bytes(b"")  # never loaded here


@pytest.fixture
def model_folders(settings, tmp_path) -> Path:
    root = tmp_path / "models"
    for name, version in (OLD, NEW):
        write_model_folder(root, name, version)
    settings.XNET_MODEL_DIR = root
    return root


@pytest.fixture
def dept(model_folders):
    """A department where cxr-old is assistive and cxr-new silent (both synced at creation)."""
    department = DepartmentFactory(name="Validation dept", models=False)
    old = ModelDeployment.objects.get(department=department, model_name=OLD[0])
    deployment_set_status(deployment=old, status="assistive", changed_by=None, reason="validated before (test)")
    assert ModelDeployment.objects.get(department=department, model_name=NEW[0]).status == "silent"
    return department


@pytest.fixture
def admin(dept):
    user = DepartmentAdminFactory(username="val_admin", department=dept)
    TOTPDeviceFactory(user=user)
    return user


@pytest.fixture
def reader(dept):
    return UserFactory(username="val_rad", department=dept)


def signed_case(
    department, final: str, results: dict, *, signer=None, uploaded_at: datetime | None = None, images: int = 1
):
    """A signed case whose images each have a job of each model in `results`:
    {(name, version): (label, probability) | "rejected"}."""
    signer = signer or UserFactory(department=department)
    case = CaseFactory(patient=PatientFactory(department=department, created_by=signer), created_by=signer)
    for _ in range(images):
        image = ImageFactory(case=case, uploaded_at=uploaded_at or timezone.now())
        add_results(image, results)
    if final is not None:
        Report.objects.create(
            case=case, agrees_with_ai=False, final_label=final, impression="Signed in a test.", signed_by=signer,
            other_finding="rib fracture" if final == Report.OTHER else "",
        )  # fmt: skip
    return case


def add_results(image, results: dict, *, gate_scores: dict | None = None) -> None:
    for (name, version), outcome in results.items():
        if outcome == "rejected":
            InferenceJobFactory(
                image=image, model_name=name, model_version=version, status=S.REJECTED,
                rejection_code="out_of_distribution", gate_scores=gate_scores or {},
            )  # fmt: skip
            continue
        label, probability = outcome
        rest = (1 - probability) / (len(CLASSES) - 1)
        PredictionFactory(
            job__image=image, job__model_name=name, job__model_version=version, job__gate_scores=gate_scores or {},
            model_name=name, model_version=version, top_label=label, top_probability=probability,
            probabilities={c: (probability if c == label else rest) for c in CLASSES},
        )  # fmt: skip


@pytest.fixture
def cases(dept):
    """Signed cases (radiologist label: new's result, old's result):
    normal x3: (normal .9, normal .8), (normal .9, pneumonia .6), (pneumonia .7, normal .8)
    pneumonia x2: (pneumonia .8, pneumonia .9), (pneumonia .6, covid .5)
    other x1: (normal .95, normal .9)
    covid x1: new refused by the gate, old (covid .7)
    Plus an unsigned case and a case of another department (not counted)."""
    rows = [
        ("normal", ("normal", 0.9), ("normal", 0.8)),
        ("normal", ("normal", 0.9), ("pneumonia", 0.6)),
        ("normal", ("pneumonia", 0.7), ("normal", 0.8)),
        ("pneumonia", ("pneumonia", 0.8), ("pneumonia", 0.9)),
        ("pneumonia", ("pneumonia", 0.6), ("covid", 0.5)),
        (Report.OTHER, ("normal", 0.95), ("normal", 0.9)),
        ("covid", "rejected", ("covid", 0.7)),
    ]
    for final, new, old in rows:
        signed_case(dept, final, {NEW: new, OLD: old})
    signed_case(dept, None, {NEW: ("covid", 0.99), OLD: ("covid", 0.99)})
    other = DepartmentFactory(name="Elsewhere", models=False)
    signed_case(other, "covid", {NEW: ("normal", 0.9)})
    return rows


def test_validation_numbers(cases, dept):
    result = selectors.validation(department_id=dept.pk, name=NEW[0], version=NEW[1])
    assert result.classes == CLASSES
    assert result.signed_cases == 6
    assert result.cases_without_result == 1
    assert result.matrix_rows == [*CLASSES, "other"]
    assert result.matrix == [
        # AI: normal, pneumonia, covid, tuberculosis
        [2, 1, 0, 0],
        [0, 2, 0, 0],
        [0, 0, 0, 0],  # the covid case was refused: no result to count
        [0, 0, 0, 0],  # never signed, still a row
        [1, 0, 0, 0],
    ]
    rates = {r.label: r for r in result.rates}
    assert (rates["normal"].tp, rates["normal"].fn, rates["normal"].fp, rates["normal"].tn) == (2, 1, 1, 2)
    assert rates["pneumonia"].sensitivity.value == 1.0
    assert rates["pneumonia"].specificity.value == pytest.approx(3 / 4)
    assert rates["pneumonia"].sensitivity.ci95 == M.wilson(2, 2)
    assert rates["tuberculosis"].sensitivity.value is None
    assert result.signed_per_class == {"normal": 3, "pneumonia": 2, "covid": 0, "tuberculosis": 0}
    assert (result.accuracy.k, result.accuracy.n) == (4, 6)
    assert (result.refusal.k, result.refusal.n) == (1, 7)
    bins = {b.lower: b for b in result.bins if b.n}
    assert {round(k, 1): b.n for k, b in bins.items()} == {0.6: 1, 0.7: 1, 0.8: 1, 0.9: 3}
    expected_ece = (
        (1 / 6) * abs(1 - 0.6)
        + (1 / 6) * abs(0 - 0.7)
        + (1 / 6) * abs(1 - 0.8)
        + (3 / 6) * abs(2 / 3 - (0.9 + 0.9 + 0.95) / 3)
    )
    assert result.ece == pytest.approx(expected_ece)


def test_a_case_with_two_images_counts_once_with_its_leading_finding(dept):
    case = signed_case(dept, "pneumonia", {NEW: ("normal", 0.9)})
    add_results(ImageFactory(case=case), {NEW: ("pneumonia", 0.6)})  # AI-positive leads, whatever its probability
    result = selectors.validation(department_id=dept.pk, name=NEW[0], version=NEW[1])
    assert result.pairs == [("pneumonia", "pneumonia")]
    assert (result.refusal.k, result.refusal.n) == (0, 2)


def test_comparison_on_the_cases_both_versions_classified(cases, dept):
    candidate = selectors.validation(department_id=dept.pk, name=NEW[0], version=NEW[1])
    assistive = ModelDeployment.objects.get(department=dept, model_name=OLD[0])
    compared = selectors.comparison(department_id=dept.pk, candidate=candidate, assistive=assistive)
    assert compared.cases == 6  # the covid case: only the old version classified it
    assert (compared.candidate.accuracy.k, compared.assistive.accuracy.k) == (4, 3)
    old_rates = {r.label: r for r in compared.assistive.rates}
    assert old_rates["normal"].sensitivity.value == pytest.approx(2 / 3)


def page_text(response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))


def test_page_for_the_department_admin(cases, dept, admin, client):
    client.force_login(admin)
    response = client.get(reverse("modelops:validation", args=NEW))
    assert response.status_code == 200
    text = page_text(response)
    assert "cxr-new 2.0.0 in Validation dept" in text
    assert "Signed cases it rests on 6 (and 1 signed case without a result" in text
    assert "66.7 % (4/6; 95 % CI" in text
    assert "14.3 % (1/7; 95 % CI" in text  # gate refusals
    assert "Pneumonia 2 100.0 % (2/2; 95 % CI 34.2–100.0 %) 75.0 % (3/4; 95 % CI" in text
    assert "Tuberculosis 0 — " in text  # every class, even unsigned
    assert "too few for Normal (3), Pneumonia (2), COVID-19 (0), Tuberculosis (0)" in text
    # Beside the assistive version, and the charts are inline SVG (no script, no CDN).
    assertContains(response, "Beside the assistive version cxr-old")
    assert 'aria-label="Calibration of cxr-new 2.0.0 here"' in response.content.decode()
    assert 'aria-label="Radiologist versus cxr-new 2.0.0"' in response.content.decode()
    assert "<script" not in response.content.decode()
    # History: installed silent (sync), nothing else yet.
    assert "installed → silent" in text
    assert "promote-form" in response.content.decode()


def test_models_list(dept, admin, client):
    client.force_login(admin)
    text = page_text(client.get(reverse("modelops:list")))
    assert "cxr-old 1.0.0 assistive" in text
    assert "cxr-new 2.0.0 silent" in text


def test_radiologists_cannot_open_it(dept, reader, client):
    client.force_login(reader)
    assert client.get(reverse("modelops:validation", args=NEW)).status_code == 403
    assert client.get(reverse("modelops:list")).status_code == 403


def test_another_departments_admin_gets_their_own_department(cases, dept, client):
    other = DepartmentFactory(name="Other dept", models=False)
    client.force_login(DepartmentAdminFactory(username="other_admin", department=other))
    response = client.get(reverse("modelops:validation", args=NEW))
    assert response.status_code == 200
    assert "Signed cases it rests on 0" in page_text(response)


def test_unknown_version_is_404(dept, admin, client):
    client.force_login(admin)
    assert client.get(reverse("modelops:validation", args=["cxr-new", "9.9.9"])).status_code == 404


def test_site_admin_chooses_a_department(cases, dept, client, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.org", "x-very-long-pw")
    client.force_login(root)
    url = reverse("modelops:validation", args=NEW)
    response = client.get(url)
    assert response.status_code == 400
    assertContains(response, "Model statuses are per department: choose one.", status_code=400)
    assertContains(response, f"?department={dept.pk}", status_code=400)
    for bad, message in (
        ("abc", "is not a department id"),
        ("9" * 40, "is not a department id"),
        ("999999", "No department with id 999999"),
    ):
        assertContains(client.get(url, {"department": bad}), message, status_code=400)
    response = client.get(url, {"department": dept.pk})
    assert response.status_code == 200
    assert "Signed cases it rests on 6" in page_text(response)
    assertContains(response, "Override the signed-case threshold")


def test_anonymous_goes_to_login(client, dept):
    assert client.get(reverse("modelops:validation", args=NEW))["Location"].startswith(reverse("login"))
