"""The model card page shows each thing once and the training data as tables (issue 13).

Before, the page's heading and CARD.md's own title both said "Model card: ...", the intended use
and limitations appeared twice (model.json above, CARD.md below), and the training data was a
JSON dump. Checked on the shipped default X-ray model's real card.
"""

from __future__ import annotations

import html
import re

import pytest
from django.urls import reverse

from ml.registry import find_model

pytestmark = pytest.mark.django_db

NAME, VERSION = "xray-mobilenetv2", "2.0.0"


@pytest.fixture
def page(rad_client, settings) -> str:
    settings.XNET_MODEL_DIR = settings.BASE_DIR / "ml" / "models"  # the shipped models
    assert find_model(settings.XNET_MODEL_DIR, NAME, VERSION) is not None, "the shipped model is installed"
    response = rad_client.get(reverse("model_card", args=[NAME, VERSION]))
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def test_title_intended_use_and_limitations_once(page, settings):
    meta = find_model(settings.XNET_MODEL_DIR, NAME, VERSION).card
    body = page.split("<body", 1)[1]
    assert body.count("Model card:") == 1
    assert len(re.findall(r"<h1[ >]", body)) == 1
    assert body.count(meta["intended_use"]) == 1
    assert body.count("<h2>Limitations</h2>") == 1
    for item in meta["limitations"]:
        assert body.count(item) == 1, item
    # The rest of CARD.md is still there.
    assert "Leave one source out (what a new hospital would see)" in body
    assert "Input gate" in body


def test_training_data_is_tables_not_json(page, settings):
    counts = find_model(settings.XNET_MODEL_DIR, NAME, VERSION).card["training"]["counts"]
    assert '"per_class"' not in page
    assert '"train": {' not in page
    training = page.split('<section class="card training-data">', 1)[1].split("</section>", 1)[0]
    train_row = re.search(r"<tr><td>Training</td>(.*?)</tr>", training).group(1)
    cells = re.findall(r"<td>([^<]*)</td>", train_row)
    assert cells[0] == str(counts["train"]["total"])
    assert cells[1:] == [
        str(counts["train"]["per_class"][label]) for label in ("normal", "pneumonia", "covid", "tuberculosis")
    ]
    assert "<th>Validation</th>" in training
    assert "<th>Test</th>" in training
    source_row = re.search(r'<td class="mono">nitrd_da</td>.*?<td>Tuberculosis</td>(.*?)</tr>', training, re.S)
    per_source = [counts[split]["per_source"]["nitrd_da"]["tuberculosis"] for split in ("train", "val", "test")]
    assert re.findall(r"<td>([^<]*)</td>", source_row.group(1)) == [str(n) for n in per_source]


def test_calibration_temperature_stays_on_the_card(page, settings):
    spec = find_model(settings.XNET_MODEL_DIR, NAME, VERSION)
    assert f"calibration temperature {spec.temperature:.3f}" in page
