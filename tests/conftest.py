from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from accounts import two_factor
from tests.factories import (
    DepartmentAdminFactory,
    DepartmentFactory,
    TOTPDeviceFactory,
    UserFactory,
    api_token_for,
    png_bytes,
)
from tests.tiny_models import build_model_dir

RESOURCES = Path(__file__).parent / "resources"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    # PBKDF2 is slow by design; the suite creates hundreds of users and tests no hashing strength.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _force_login_passes_second_factor(monkeypatch):
    """`Client.force_login` skips the login form; here it skips the second factor too, as if the
    user had typed their code. The login flow itself (password, code, set-up) is driven for real
    in tests/test_accounts_two_factor.py and the browser test."""
    original = Client.force_login

    def force_login(self, user, backend=None):
        original(self, user, backend)
        session = self.session
        if session.pop(two_factor.SESSION_STATE_KEY, None):
            session.save()

    monkeypatch.setattr(Client, "force_login", force_login)


@pytest.fixture(autouse=True)
def _empty_cache():
    """Throttles (token use, wrong API tokens) live in the per-process cache: start each test
    without what the previous one counted."""
    cache.clear()


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    """Each test writes uploads to its own folder, so leftover files can be asserted on."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def department():
    return DepartmentFactory(name="Radiology A")


@pytest.fixture
def other_department():
    return DepartmentFactory(name="Radiology B")


@pytest.fixture
def radiologist(department):
    return UserFactory(username="rad_a", department=department)


@pytest.fixture
def department_admin(department):
    """Enrolled in two-factor authentication, as every department admin must be."""
    admin = DepartmentAdminFactory(username="admin_a", department=department)
    TOTPDeviceFactory(user=admin)
    return admin


@pytest.fixture
def outsider(other_department):
    """A radiologist of another department: must never see department A's data."""
    return UserFactory(username="rad_b", department=other_department)


@pytest.fixture
def rad_client(client, radiologist):
    client.force_login(radiologist)
    return client


@pytest.fixture
def admin_client(client, department_admin):
    """The department admin's browser session: this project's admin pages are department admins'
    (it replaces pytest-django's superuser admin_client; a test wanting a site admin says so)."""
    client.force_login(department_admin)
    return client


def token_client(user) -> APIClient:
    """An API client with a new token of `user`."""
    api = APIClient()
    _, key = api_token_for(user)
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return api


@pytest.fixture
def api(radiologist) -> APIClient:
    return token_client(radiologist)


@pytest.fixture
def outsider_api(outsider) -> APIClient:
    return token_client(outsider)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """Real Keras models (tiny, random weights) for both modalities, built once per run."""
    return build_model_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture
def installed_models(settings, model_dir) -> Path:
    """The tiny models installed; in departments that exist already (and, through DepartmentFactory,
    in those made later) the newest of each modality is assistive, the placeholders retired."""
    from accounts.models import Department
    from tests.factories import speaking_models

    settings.XNET_MODEL_DIR = model_dir
    for department in Department.objects.all():
        speaking_models(department)
    return model_dir


@pytest.fixture
def chest_xray_bytes() -> bytes:
    return (RESOURCES / "kermany_normal_1.jpg").read_bytes()


@pytest.fixture
def make_png():
    return png_bytes


@pytest.fixture
def classify_now(radiologist):
    """Upload one image to a new case of the radiologist's department and run its job in this
    process the way the worker does: what a model folder does in the platform, without a broker."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from diagnosis import services
    from tests.factories import CaseFactory, PatientFactory, speaking_models

    patient = PatientFactory(department=radiologist.department, created_by=radiologist)

    def classify(data: bytes, modality: str = "xray"):
        # The models installed now (a test may set XNET_MODEL_DIR after the department exists) are
        # the department's, so the job names one the worker has (issue 12).
        speaking_models(radiologist.department)
        case = CaseFactory(patient=patient, created_by=radiologist, modality=modality)
        job = services.image_upload(case=case, file=SimpleUploadedFile("chest.png", data), uploaded_by=radiologist)
        services.job_run(job_id=job.pk)
        job.refresh_from_db()
        return job

    return classify


def media_files(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.is_file()] if Path(root).exists() else []


def kaggle_subset(root: Path, per_class: int = 3) -> Path:
    """A Kaggle-layout folder with real labelled X-rays (read from ../shared/data at run time)."""
    with (SHARED_DATA / "manifest.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["modality"] == "xray"]
    for split in ("train", "val", "test"):
        for label in ("normal", "pneumonia", "covid", "tuberculosis"):
            picked = [r for r in rows if r["split"] == split and r["label"] == label][:per_class]
            target = root / split / label.upper()
            target.mkdir(parents=True)
            for row in picked:
                shutil.copy(SHARED_DATA / row["path"], target / Path(row["path"]).name)
        (root / split / "EMPTY_CLASS").mkdir()
    return root
