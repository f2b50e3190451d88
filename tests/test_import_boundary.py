"""The web process never loads TensorFlow or Keras; only the worker's inference path does.

Checked in fresh interpreters: this pytest process has Keras loaded already (the model
fixtures build real models), so `sys.modules` here proves nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs in the subprocess. It serves real requests (pages, API, schema) on a scratch SQLite
# database, then reports which ML frameworks ended up imported.
WEB_PROCESS = """
import json, sys
import django
django.setup()
from django.core.management import call_command
from django.test import Client
from django.test.utils import setup_test_environment
from django.urls import resolve, reverse
from accounts.services import api_token_create

import xnet_site.wsgi, xnet_site.urls, xnet_site.celery
import diagnosis.views, diagnosis.api.views, diagnosis.tasks, diagnosis.services
import diagnosis.selectors, ml.registry, ml.inference  # ml.inference itself must stay light
from tests.factories import PredictionFactory, UserFactory

setup_test_environment()
call_command("migrate", verbosity=0)
user = UserFactory(username="rad")
prediction = PredictionFactory(
    job__image__case__patient__department=user.department,
    job__image__case__patient__created_by=user,
    job__image__uploaded_by=user,
)
job = prediction.job
case = job.image.case

web = Client()
web.force_login(user)
api = Client(HTTP_AUTHORIZATION="Token " + api_token_create(user=user, name="t", days=1, created_by=None)[1])
page = web.get(reverse("case_detail", args=[case.pk]))
statuses = {
    "worklist": web.get(reverse("worklist")).status_code,
    "case_detail": page.status_code,
    "case_status": web.get(reverse("case_status", args=[case.pk])).status_code,
    "api_case": api.get(f"/api/v1/cases/{case.pk}/").status_code,
    "api_job": api.get(f"/api/v1/jobs/{job.pk}/").status_code,
    "api_schema": api.get("/api/schema/").status_code,
}
resolved = [resolve(path).func.__module__ for path in ("/", f"/cases/{case.pk}/", f"/api/v1/jobs/{job.pk}/")]
print(json.dumps({
    "statuses": statuses,
    "resolved": resolved,
    "page_shows_prediction": 'class="top-label">Pneumonia<' in page.content.decode(),
    "loaded": sorted(m for m in ("tensorflow", "keras") if m in sys.modules),
}))
"""

# The converse, in the same style: the worker's load path does bring Keras in.
WORKER_LOAD = """
import json, sys
import django
django.setup()
from django.conf import settings
from ml import inference
from ml.registry import model_for

before = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
inference.load_model(model_for("xray", settings.XNET_MODEL_DIR))
print(json.dumps({
    "before": before,
    "loaded": sorted(m for m in ("tensorflow", "keras") if m in sys.modules),
}))
"""


def _run(script: str, tmp_path: Path, model_dir: Path) -> dict:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "DJANGO_SETTINGS_MODULE": "xnet_site.settings",
        "XNET_VAR_DIR": str(tmp_path / "var"),  # SQLite database and broker folder, scratch
        "XNET_MEDIA_ROOT": str(tmp_path / "media"),
        "XNET_MODEL_DIR": str(model_dir),  # real models installed: the registry may read them
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stderr[-6000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_web_process_never_imports_tensorflow(tmp_path, model_dir):
    report = _run(WEB_PROCESS, tmp_path, model_dir)
    assert report["statuses"] == {
        "worklist": 200,
        "case_detail": 200,
        "case_status": 200,
        "api_case": 200,
        "api_job": 200,
        "api_schema": 200,
    }
    assert report["resolved"] == ["diagnosis.views", "diagnosis.views", "diagnosis.api.views"]
    assert report["page_shows_prediction"]  # the prediction templates ran too
    assert report["loaded"] == []


def test_worker_load_path_imports_keras(tmp_path, model_dir):
    """Proves the check above can fail: the same probe sees Keras once a model is loaded."""
    report = _run(WORKER_LOAD, tmp_path, model_dir)
    assert report["before"] == []
    assert report["loaded"] == ["keras", "tensorflow"]


@pytest.mark.parametrize("module", ["tensorflow", "keras"])
def test_ruff_bans_module_level_ml_imports(module):
    """The same rule, at lint time: a module-level import in web code is an error (TID253)."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("ruff")), "check", "--stdin-filename", "diagnosis/probe.py", "-"],
        cwd=ROOT,
        input=f"import {module}\n\nprint({module})\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "TID253" in result.stdout
