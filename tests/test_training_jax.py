"""Training is backend-agnostic Keras 3: GPU machines here carry JAX and no TensorFlow, so the
training command must run on JAX, and the model file it writes must serve in our TensorFlow worker."""

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings

from diagnosis.models import InferenceJob
from ml.registry import model_for
from tests.conftest import RESOURCES, kaggle_subset


@pytest.mark.django_db
def test_a_model_trained_on_jax_serves_in_the_tensorflow_worker(tmp_path, classify_now, settings):
    data = kaggle_subset(tmp_path / "kaggle", per_class=2)
    out = tmp_path / "models" / "xray-jax"
    command = [sys.executable, "-m", "training.train", "xray", "--data", str(data), "--arch", "compact",
               "--size", "32", "--epochs", "1", "--batch-size", "4", "--bootstrap", "10", "--no-baselines",
               "--no-gate", "--version", "0.0.2", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(command, cwd=django_settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((out / "model.json").read_text())
    assert meta["training"]["keras_backend"] == "jax"

    settings.XNET_MODEL_DIR = out.parent
    spec = model_for("xray", out.parent)
    assert spec.version == "0.0.2"
    job = classify_now((RESOURCES / "kermany_normal_1.jpg").read_bytes())
    assert job.status == InferenceJob.Status.SUCCEEDED, job.error_message
    assert set(job.prediction.probabilities) == set(meta["classes"])
    assert job.prediction.heatmap
