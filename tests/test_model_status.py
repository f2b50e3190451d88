"""Model status per department (issue 12): starting statuses, transitions, jobs per active model,
and silent results invisible everywhere a radiologist or a token looks."""

from __future__ import annotations

import io
import json
import shutil

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from pypdf import PdfReader

from audit.models import AuditEvent
from diagnosis import services
from diagnosis.model_status import (
    active_deployments,
    assistive_deployment,
    deployment_set_status,
    deployments_sync,
    is_assistive,
    no_validated_model_message,
)
from diagnosis.models import Case, InferenceJob, ModelDeployment, ModelStartingStatus, ModelStatusChange, Prediction
from reviews import services as review_services
from tests.conftest import token_client
from tests.factories import (
    CaseFactory,
    DepartmentFactory,
    ImageFactory,
    InferenceJobFactory,
    ModelDeploymentFactory,
    PatientFactory,
    PredictionFactory,
    assistive,
)

pytestmark = pytest.mark.django_db

Status = ModelDeployment.Status


def _rows(department) -> dict[tuple[str, str], str]:
    return {
        (row.model_name, row.model_version): row.status for row in ModelDeployment.objects.filter(department=department)
    }


def _model_folder(root, source, *, name: str, version: str, recommended: str | None = None):
    """A copy of a tiny model folder under another name/version (same weights)."""
    folder = root / f"{name}-{version}"
    shutil.copytree(source, folder)
    meta = json.loads((folder / "model.json").read_text())
    meta.update(name=name, version=version)
    if recommended:
        meta["recommended_status"] = recommended
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture
def models_root(tmp_path, model_dir, settings):
    """A model folder of our own: the tiny X-ray model as xray-tiny 1.0.0, and room for more."""
    root = tmp_path / "models"
    root.mkdir()
    shutil.copytree(model_dir / "xray-tiny", root / "xray-tiny")
    settings.XNET_MODEL_DIR = root
    return root


# Starting statuses and sync ---------------------------------------------------------------


def test_sync_gives_every_department_a_row_per_version_starting_silent(models_root, model_dir):
    _model_folder(models_root, model_dir / "xray-tiny", name="xray-tiny", version="0.9.0")
    _model_folder(models_root, model_dir / "ct-tiny", name="ct-tiny", version="1.0.0", recommended="silent")
    a, b = DepartmentFactory(models=False), DepartmentFactory(models=False)  # synced as they are created
    for department in (a, b):
        assert _rows(department) == {
            ("xray-tiny", "1.0.0"): "silent",
            ("xray-tiny", "0.9.0"): "retired",  # a newer version of the same model is installed
            ("ct-tiny", "1.0.0"): "silent",
        }
    row = ModelDeployment.objects.get(department=a, model_name="ct-tiny")
    assert row.changes.get().reason == "installed; the model folder recommends starting silent"
    assert deployments_sync() == []  # idempotent: existing rows are never changed


def test_site_admin_starting_status_wins_over_the_folder(models_root, model_dir, department_admin):
    special = DepartmentFactory(models=False, name="Special")
    other = DepartmentFactory(models=False, name="Other")
    _model_folder(models_root, model_dir / "xray-tiny", name="xray-next", version="2.0.0", recommended="silent")
    ModelStartingStatus.objects.create(
        model_name="xray-next", model_version="2.0.0", status="assistive", reason="validated centrally", set_by=None
    )
    ModelStartingStatus.objects.create(
        model_name="xray-next",
        model_version="2.0.0",
        department=special,
        status="retired",
        reason="not for this site",
        set_by=department_admin,
    )
    deployments_sync()
    assert _rows(other)[("xray-next", "2.0.0")] == "assistive"
    assert _rows(special)[("xray-next", "2.0.0")] == "retired"
    change = ModelDeployment.objects.get(department=special, model_name="xray-next").changes.get()
    assert change.changed_by == department_admin
    assert "not for this site" in change.reason


def test_a_new_version_starts_silent_beside_the_assistive_one(models_root, model_dir):
    department = DepartmentFactory(models=False)
    current = ModelDeployment.objects.get(department=department, model_name="xray-tiny")
    assistive(current)
    # A new version arrives whose folder even recommends assistive: it still starts silent here.
    _model_folder(models_root, model_dir / "xray-tiny", name="xray-tiny", version="1.1.0", recommended="assistive")
    [created] = deployments_sync()
    assert (created.model_version, created.status) == ("1.1.0", "silent")
    assert "another X-ray model is assistive" in created.changes.get().reason
    assert assistive_deployment(department=department, modality="xray") == current
    assert [row.model_version for row in active_deployments(department=department, modality="xray")] == [
        "1.0.0",
        "1.1.0",
    ]


def test_sync_models_command(models_root, model_dir):
    department = DepartmentFactory(models=False)
    _model_folder(models_root, model_dir / "ct-tiny", name="ct-tiny", version="1.0.0")
    out = io.StringIO()
    call_command("sync_models", stdout=out)
    assert "1 deployment rows created" in out.getvalue()
    assert _rows(department) == {("xray-tiny", "1.0.0"): "silent", ("ct-tiny", "1.0.0"): "silent"}


# Transitions --------------------------------------------------------------------------------


def test_promotion_demotes_the_previous_assistive_with_history_and_audit(department_admin):
    department = department_admin.department
    old = ModelDeploymentFactory(department=department, model_name="m-old", status="silent")
    new = ModelDeploymentFactory(department=department, model_name="m-new", status="silent")
    deployment_set_status(deployment=old, status="assistive", changed_by=department_admin, reason="first")
    deployment_set_status(deployment=new, status="assistive", changed_by=department_admin, reason="validated: 40 cases")
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.status, new.status) == ("silent", "assistive")
    # The placeholder test-xray was demoted by the first promotion: one assistive X-ray model.
    assert ModelDeployment.objects.filter(department=department, modality="xray", status="assistive").count() == 1
    assert [(c.from_status, c.to_status) for c in old.changes.order_by("id")] == [
        ("silent", "assistive"),
        ("assistive", "silent"),
    ]
    assert old.changes.first().reason == "replaced by m-new 1.0.0: validated: 40 cases"
    events = AuditEvent.objects.filter(action=AuditEvent.Action.MODEL_STATUS_CHANGE, object_id=str(new.pk))
    [event] = events
    assert (event.actor, event.department_id) == (department_admin, department.pk)
    assert event.detail["from"] == "silent"
    assert event.detail["to"] == "assistive"
    assert event.detail["reason"] == "validated: 40 cases"
    assert is_assistive(department_id=department.pk, model_name="m-new", model_version="1.0.0")
    assert not is_assistive(department_id=department.pk, model_name="m-old", model_version="1.0.0")


def test_refusals_reason_status_and_the_database_guard(department_admin):
    row = ModelDeploymentFactory(department=department_admin.department, model_name="m", status="silent")
    with pytest.raises(ValidationError, match="Say why"):
        deployment_set_status(deployment=row, status="assistive", changed_by=department_admin, reason="  ")
    with pytest.raises(ValidationError, match="Unknown status"):
        deployment_set_status(deployment=row, status="loud", changed_by=department_admin, reason="x")
    row.refresh_from_db()
    assert row.status == "silent"
    assert not row.changes.exists()
    # A writer bypassing the service cannot make two versions assistive in one department and modality.
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelDeployment.objects.filter(pk=row.pk).update(status="assistive")
    # The history is append-only.
    change = deployment_set_status(deployment=row, status="retired", changed_by=None, reason="old").changes.get()
    with pytest.raises(ValidationError):
        change.save()
    with pytest.raises(ValidationError):
        change.delete()
    assert ModelStatusChange.objects.filter(pk=change.pk).exists()


# Jobs -------------------------------------------------------------------------------------------


def test_upload_without_any_active_model_stores_the_image_and_says_so(radiologist, api):
    ModelDeployment.objects.filter(department=radiologist.department, modality="ct").update(status="retired")
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    case = CaseFactory(patient=patient, created_by=radiologist, modality="ct")
    response = api.post(f"/api/v1/cases/{case.pk}/images/", {"file": SimpleUploadedFile("c.png", _png())})
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["job"] is None
    assert body["note"] == "No validated model for CT in this department: images are stored for reading."
    assert response["Location"] == body["image"]["url"]
    assert case.images.count() == 1
    assert not InferenceJob.objects.filter(image__case=case).exists()


def test_silent_only_modality_runs_its_model_but_the_page_says_no_validated_model(rad_client, radiologist):
    ModelDeployment.objects.filter(department=radiologist.department, modality="ct").update(status="silent")
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    case = CaseFactory(patient=patient, created_by=radiologist, modality="ct")
    [job] = services.images_upload(case=case, files=[SimpleUploadedFile("c.png", _png())], uploaded_by=radiologist)
    assert (job.model_name, job.status) == ("test-ct", "pending")  # the silent model runs
    page = rad_client.get(reverse("case_detail", args=[case.pk]))
    assert no_validated_model_message("ct") in page.content.decode()
    status = rad_client.get(reverse("case_status", args=[case.pk])).json()
    assert status["finished"] is True  # nothing shown is waiting
    assert status["images"][0]["job"] is None
    assert status["images"][0]["no_result"] == no_validated_model_message("ct")


def test_both_models_run_with_exactly_one_prediction_each(radiologist, models_root, model_dir):
    """A silent candidate beside the assistive version: every upload gets one job per version,
    the worker's batch runs both, and each model stores exactly one result per image."""
    _model_folder(models_root, model_dir / "xray-tiny", name="xray-candidate", version="1.0.0")
    department = radiologist.department
    ModelDeployment.objects.filter(department=department, model_name__startswith="test-").update(status="retired")
    deployments_sync()
    assistive(ModelDeployment.objects.get(department=department, model_name="xray-tiny"))
    assert _rows(department)[("xray-candidate", "1.0.0")] == "silent"
    patient = PatientFactory(department=department, created_by=radiologist)
    case = CaseFactory(patient=patient, created_by=radiologist)
    files = [SimpleUploadedFile(f"c{i}.png", _png(value=60 + i)) for i in range(2)]
    jobs = services.images_upload(case=case, files=files, uploaded_by=radiologist)
    assert sorted((job.image.position, job.model_name) for job in jobs) == [
        (1, "xray-candidate"),
        (1, "xray-tiny"),
        (2, "xray-candidate"),
        (2, "xray-tiny"),
    ]
    for job in jobs:
        services.job_run(job_id=job.pk)
    statuses = set(InferenceJob.objects.filter(image__case=case).values_list("status", flat=True))
    assert statuses == {"succeeded"}
    per_model = sorted(
        Prediction.objects.filter(job__image__case=case).values_list("job__image__position", "model_name")
    )
    assert per_model == [(1, "xray-candidate"), (1, "xray-tiny"), (2, "xray-candidate"), (2, "xray-tiny")]
    # The database refuses a second result of one model for one image.
    job = InferenceJob.objects.filter(image__case=case, model_name="xray-tiny").first()
    with pytest.raises(IntegrityError), transaction.atomic():
        InferenceJobFactory(image=job.image, model_name="xray-tiny", model_version="1.0.0", status="succeeded")


# Triage -------------------------------------------------------------------------------------------


def test_triage_ignores_silent_results_and_follows_a_promotion(
    rad_client, radiologist, django_capture_on_commit_callbacks
):
    department = radiologist.department
    shadow = ModelDeploymentFactory(department=department, model_name="shadow", status="silent")
    patient = PatientFactory(department=department, created_by=radiologist)
    case = CaseFactory(patient=patient, created_by=radiologist)
    image = ImageFactory(case=case)
    PredictionFactory(job__image=image, job__model_name="shadow", top_label="covid", top_probability=0.99)
    case.refresh_from_db()
    assert (case.lead_label, case.lead_probability) == ("", None)  # a silent result never raises a case
    calm = CaseFactory(patient=patient, created_by=radiologist)
    PredictionFactory(job__image=ImageFactory(case=calm), top_label="normal", top_probability=0.9)
    body = token_client(radiologist).get("/api/v1/cases/").json()
    summary = {row["id"]: (row["status"], row["top_label"]) for row in body["results"]}
    assert summary[case.pk] == (None, None)
    with django_capture_on_commit_callbacks(execute=True):
        assistive(shadow)  # promoted: the department's unsigned cases are re-ordered after the commit
    case.refresh_from_db()
    assert (case.lead_label, case.lead_probability) == ("covid", 0.99)


def test_job_column_and_status_filter_follow_a_promotion_signed_cases_too(
    radiologist, django_capture_on_commit_callbacks
):
    """Case.latest_job (the worklist's job column and status filter, issue 11) is the latest shown
    job: a promotion makes the new model's results shown and the demoted one's not, on signed
    cases as well as unsigned ones, whose reading order alone the promotion recomputes."""
    department = radiologist.department
    shadow = ModelDeploymentFactory(department=department, model_name="shadow", status="silent")
    patient = PatientFactory(department=department, created_by=radiologist)
    signed = CaseFactory(patient=patient, created_by=radiologist)
    image = ImageFactory(case=signed)
    PredictionFactory(job__image=image, top_label="normal", top_probability=0.9)
    later_silent = InferenceJobFactory(image=image, model_name="shadow", status="failed")
    review_services.report_sign(
        case=Case.objects.get(pk=signed.pk), signed_by=radiologist, agrees_with_ai=True, impression="Clear lungs."
    )
    unsigned = CaseFactory(patient=patient, created_by=radiologist)
    PredictionFactory(job__image=ImageFactory(case=unsigned), top_label="normal", top_probability=0.8)
    api = token_client(radiologist)

    def shown() -> dict[int, tuple]:
        rows = api.get("/api/v1/cases/").json()["results"]
        return {row["id"]: (row["status"], row["top_label"]) for row in rows}

    def failed() -> set[int]:
        return {row["id"] for row in api.get("/api/v1/cases/?status=failed").json()["results"]}

    assert shown() == {signed.pk: ("succeeded", "normal"), unsigned.pk: ("succeeded", "normal")}
    assert failed() == set()
    with django_capture_on_commit_callbacks(execute=True):
        assistive(shadow)  # the tiny X-ray model is demoted with it
    assert Case.objects.get(pk=signed.pk).latest_job_id == later_silent.pk
    assert shown() == {signed.pk: ("failed", None), unsigned.pk: (None, None)}
    assert failed() == {signed.pk}
    assert {row["id"] for row in api.get("/api/v1/cases/?status=none").json()["results"]} == {unsigned.pk}


# Silent results are invisible -------------------------------------------------------------------

SILENT_LABEL = "zz_silent_finding"
SILENT_MARKERS = ("zz_silent_finding", "zz silent finding", "98.8", "0.9876")


@pytest.fixture
def shadowed(radiologist):
    """A signed case and an unsigned one of department A, each with a silent model's result
    carrying a label and probability found nowhere else; the signed one also has an assistive
    result (so its report and PDF have an AI finding)."""
    department = radiologist.department
    ModelDeploymentFactory(department=department, model_name="shadow-xray", model_version="9.9.9", status="silent")
    patient = PatientFactory(department=department, created_by=radiologist)
    silent = {
        "job__model_name": "shadow-xray",
        "job__model_version": "9.9.9",
        "probabilities": {SILENT_LABEL: 0.9876, "normal": 0.0124},
        "top_label": SILENT_LABEL,
        "top_probability": 0.9876,
    }
    signed = CaseFactory(patient=patient, created_by=radiologist)
    first = ImageFactory(case=signed)
    shown = PredictionFactory(job__image=first)
    silent_predictions = [PredictionFactory(job__image=first, **silent)]
    silent_predictions.append(PredictionFactory(job__image=ImageFactory(case=signed), **silent))
    review_services.report_sign(
        case=Case.objects.get(pk=signed.pk),
        signed_by=radiologist,
        agrees_with_ai=True,
        impression="Right lower lobe consolidation.",
    )
    unsigned = CaseFactory(patient=patient, created_by=radiologist)
    silent_predictions.append(PredictionFactory(job__image=ImageFactory(case=unsigned), **silent))
    return {
        "patient": patient,
        "signed": signed,
        "unsigned": unsigned,
        "shown": shown,
        "silent": silent_predictions,
    }


def _url_kwargs(route: str, converters: list[str], objects: dict) -> dict | None:
    """Values for a route's parameters from the fixture's objects (silent ones where a route names
    a job or prediction); None when a parameter is unknown here."""
    silent = objects["silent"][0]
    values = {
        "case_id": objects["signed"].pk,
        "patient_id": objects["patient"].pk,
        "image_id": silent.job.image_id,
        "job_id": silent.job_id,
        "prediction_id": silent.pk,
    }
    by_route = [
        ("prediction", silent.pk),
        ("job", silent.job_id),
        ("image", silent.job.image_id),
        ("case", objects["signed"].pk),
        ("patient", objects["patient"].pk),
    ]
    kwargs = {}
    for name in converters:
        if name in values:
            kwargs[name] = values[name]
        elif name == "pk":
            found = next((value for word, value in by_route if word in route), None)
            if found is None:
                return None
            kwargs[name] = found
        elif name == "name":
            kwargs[name] = "shadow-xray"
        elif name == "version":
            kwargs[name] = "9.9.9"
        else:
            return None
    return kwargs


def _get_urls(objects: dict) -> list[str]:
    """Every GET-able URL of the project whose parameters the fixture can fill (Django admin,
    log-out and set-up flows left out), walking the URL resolver rather than a hand list."""
    urls: list[str] = []

    def walk(patterns, prefix: str, namespace: str | None) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                if route.startswith("admin/"):
                    continue
                ns = pattern.namespace
                walk(pattern.url_patterns, route, f"{namespace}:{ns}" if namespace and ns else ns or namespace)
            elif isinstance(pattern, URLPattern) and pattern.name:
                converters = list(pattern.pattern.converters) if hasattr(pattern.pattern, "converters") else []
                kwargs = _url_kwargs(route, converters, objects)
                if kwargs is None:
                    continue
                name = f"{namespace}:{pattern.name}" if namespace else pattern.name
                try:
                    urls.append(reverse(name, kwargs=kwargs))
                except Exception:  # noqa: S112 - regex routes without named groups: not reversible with kwargs
                    continue

    walk(get_resolver().url_patterns, "", None)
    # Log-out and account set-up flows change the session; /pixels/ serves a DICOM's modality
    # values (no AI result) and raises for a PNG image such as the fixture's.
    skip = ("logout", "two-factor", "password", "/pixels/")
    return sorted({url for url in urls if not any(word in url for word in skip)})


def _text(response) -> str:
    if response.get("Content-Type", "").startswith("application/pdf"):
        return " ".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode(errors="replace")
    return response.content.decode(errors="replace")


def test_silent_results_are_invisible_on_every_page_and_api_endpoint(client, radiologist, shadowed):
    client.force_login(radiologist)
    api = token_client(radiologist)
    urls = _get_urls(shadowed)
    # The walk found the pages and endpoints that show results (guards against an empty walk).
    for expected in ("/cases/", "/api/v1/cases/", "/api/v1/jobs/", "/api/v1/predictions/", "report.pdf"):
        assert any(expected in url for url in urls), (expected, urls)
    for case in (shadowed["signed"], shadowed["unsigned"]):
        urls += [
            reverse("case_detail", args=[case.pk]),
            reverse("case_status", args=[case.pk]),
            f"/api/v1/cases/{case.pk}/",
            f"/api/v1/images/{case.images.last().pk}/",
        ]
    urls += [reverse("report_pdf", args=[shadowed["signed"].pk]), "/", "/api/v1/cases/", "/api/v1/jobs/"]
    seen = 0
    for url in urls:
        for who, reader in (("radiologist", client), ("token", api)):
            if who == "token" and not url.startswith("/api/"):
                continue
            response = reader.get(url)
            assert response.status_code != 500, (who, url)  # (/healthz is 503 without a worker)
            text = _text(response).lower()
            for marker in SILENT_MARKERS:
                assert marker not in text, (who, url, marker)
            seen += response.status_code == 200
    assert seen > 20
    # A silent job, prediction and heatmap are not found at all, for the page and for tokens.
    silent = shadowed["silent"][0]
    assert api.get(f"/api/v1/jobs/{silent.job_id}/").status_code == 404
    assert api.get(f"/api/v1/predictions/{silent.pk}/").status_code == 404
    assert api.get(f"/api/v1/predictions/{silent.pk}/heatmap/").status_code == 404
    assert client.get(reverse("prediction_heatmap", args=[silent.pk])).status_code == 404
    # The report signed against the assistive result only, and the PDF names its model's status.
    report = shadowed["signed"].report
    assert report.ai_job_id == shadowed["shown"].job_id
    assert all(entry["model_name"] != "shadow-xray" for entry in report.ai_results)
    pdf = _text(client.get(reverse("report_pdf", args=[shadowed["signed"].pk])))
    assert "assistive since" in pdf


def test_shown_result_names_its_status_and_evidence(rad_client, radiologist):
    department = radiologist.department
    patient = PatientFactory(department=department, created_by=radiologist)
    signed = CaseFactory(patient=patient, created_by=radiologist)
    PredictionFactory(job__image=ImageFactory(case=signed), top_label="pneumonia")
    review_services.report_sign(
        case=Case.objects.get(pk=signed.pk), signed_by=radiologist, agrees_with_ai=True, impression="Pneumonia."
    )
    case = CaseFactory(patient=patient, created_by=radiologist)
    prediction = PredictionFactory(job__image=ImageFactory(case=case), top_label="pneumonia")
    page = rad_client.get(reverse("case_detail", args=[case.pk])).content.decode()
    assert "validated on 1 signed case here: agreement 100%, pneumonia sensitivity 100% (n=1)" in page
    assert 'href="/models/test-xray/1.0.0/validation/"' in page or "/models/test-xray/1.0.0/validation/" in page
    job = token_client(radiologist).get(f"/api/v1/jobs/{prediction.job_id}/").json()
    assert job["model_status"]["status"] == "assistive"
    assert job["model_status"]["evidence"].startswith("assistive since ")


def test_seed_demo_makes_the_xray_default_assistive_by_a_recorded_override(settings, model_dir, tmp_path):
    settings.DEBUG = True
    root = tmp_path / "shipped"
    root.mkdir()
    _model_folder(root, model_dir / "xray-tiny", name="xray-tiny", version="1.0.0", recommended="silent")
    _model_folder(root, model_dir / "ct-tiny", name="ct-tiny", version="1.0.0", recommended="silent")
    settings.XNET_MODEL_DIR = root
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    call_command("seed_demo", stdout=out)  # idempotent
    from accounts.management.commands.seed_demo import DEMO_DEPARTMENT

    rows = ModelDeployment.objects.filter(department__name=DEMO_DEPARTMENT)
    assert {(row.model_name, row.status) for row in rows} == {("xray-tiny", "assistive"), ("ct-tiny", "silent")}
    change = rows.get(model_name="xray-tiny").changes.filter(to_status="assistive").get()
    assert change.reason == "demo department, not for clinical use"
    assert change.override is True
    assert change.changed_by.is_superuser
    assert "not for clinical use" in out.getvalue()


def _png(value: int = 90) -> bytes:
    from tests.factories import png_bytes

    return png_bytes(value=value)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_candidate_beside_the_assistive_model(
    tmp_path, models_root, model_dir, radiologist, api, rad_client, chest_xray_bytes
):
    """The whole path with a celery worker process: each upload's two jobs (assistive and silent
    candidate) both finish, one prediction per model per image, and the API and the case page
    show the assistive model's result only."""
    from functools import partial

    from tests.workers import WorkerPool, api_upload, case_for, finished_job, wait_for

    _model_folder(models_root, model_dir / "xray-tiny", name="xray-candidate", version="1.0.0")
    department = radiologist.department
    ModelDeployment.objects.filter(department=department, model_name__startswith="test-").update(status="retired")
    deployments_sync()
    assistive(ModelDeployment.objects.get(department=department, model_name="xray-tiny"))
    case = case_for(radiologist, "xray")
    with WorkerPool(tmp_path / "workers", model_dir=models_root) as pool:
        worker = pool.start()
        bodies = [api_upload(api, case, chest_xray_bytes) for _ in range(2)]
        jobs = list(InferenceJob.objects.filter(image__case=case))
        assert len(jobs) == 4
        for job in jobs:
            # 90 s: a fresh worker child imports TensorFlow before its first prediction
            # (tests/test_integration_worker.py's measured bound).
            finished = wait_for(partial(finished_job, job.pk), timeout=90, what=f"job {job.pk}", log=worker.log)
            assert finished.status == InferenceJob.Status.SUCCEEDED, finished.error_message
    per_model = sorted(
        Prediction.objects.filter(job__image__case=case).values_list("job__image__position", "model_name")
    )
    assert per_model == [(1, "xray-candidate"), (1, "xray-tiny"), (2, "xray-candidate"), (2, "xray-tiny")]
    for body in bodies:
        assert body["job"]["model_name"] == "xray-tiny"  # the upload answers with the assistive job
    detail = api.get(f"/api/v1/cases/{case.pk}/").json()
    shown = [job["model_name"] for image in detail["images"] for job in image["jobs"]]
    assert shown == ["xray-tiny", "xray-tiny"]
    page = rad_client.get(reverse("case_detail", args=[case.pk])).content.decode()
    assert "xray-candidate" not in page


def test_site_admin_changes_a_status_in_the_django_admin(client, django_user_model, radiologist):
    """Through deployment_set_status, with a required reason, recorded as an override."""
    root = django_user_model.objects.create_superuser("root", "root@example.org", "x-very-long-pw-1")
    client.force_login(root)
    row = ModelDeploymentFactory(department=radiologist.department, model_name="m-admin", status="silent")
    url = reverse("admin:diagnosis_modeldeployment_change", args=[row.pk])
    assert client.get(url).status_code == 200
    inline = {"changes-TOTAL_FORMS": "0", "changes-INITIAL_FORMS": "0", "changes-MAX_NUM_FORMS": "1000"}
    refused = client.post(url, {"new_status": "assistive", "reason": "", **inline})
    assert refused.status_code == 200  # the form again, with the error
    assert "Say why the model" in refused.content.decode()
    row.refresh_from_db()
    assert row.status == "silent"
    accepted = client.post(url, {"new_status": "assistive", "reason": "validated at the central site", **inline})
    assert accepted.status_code == 302
    row.refresh_from_db()
    assert row.status == "assistive"
    change = row.changes.first()
    assert (change.changed_by, change.override, change.reason) == (root, True, "validated at the central site")
    assert client.get(reverse("admin:diagnosis_modeldeployment_add")).status_code == 403


def test_upload_page_says_no_model_runs_when_none_is_active(rad_client, radiologist):
    ModelDeployment.objects.filter(department=radiologist.department, modality="ct").update(status="retired")
    patient = PatientFactory(department=radiologist.department, created_by=radiologist)
    case = CaseFactory(patient=patient, created_by=radiologist, modality="ct")
    response = rad_client.post(
        reverse("case_upload", args=[case.pk]), {"images": SimpleUploadedFile("c.png", _png())}, follow=True
    )
    page = response.content.decode()
    assert "1 image uploaded and stored for reading (no model runs for them here)." in page
    assert no_validated_model_message("ct") in page
    assert case.images.count() == 1
