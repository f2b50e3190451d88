"""Shortcut defences: the cue augmentations (training.shortcuts) and the preprocessing steps
(contrast normalisation, border mask) that model.json records for the worker."""

import numpy as np
import pytest
from PIL import Image

from ml.preprocessing import Preprocessing, prepare
from training import shortcuts


def _film(seed: int = 0, size: tuple[int, int] = (200, 180)) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    body = 120 + 60 * np.sin(x / 23.0) * np.cos(y / 31.0) + rng.normal(0, 8, (size[1], size[0]))
    return Image.fromarray(np.clip(body, 0, 255).astype(np.uint8), mode="L")


@pytest.mark.parametrize("name", sorted(shortcuts.CUES))
def test_each_cue_keeps_size_mode_and_range(name):
    function, _ = shortcuts.CUES[name]
    image = _film()
    out = function(image, np.random.default_rng(3))
    assert out.size == image.size
    assert out.mode == "L"
    array = np.asarray(out)
    assert array.dtype == np.uint8
    assert 0 <= array.min() <= array.max() <= 255


@pytest.mark.parametrize("name", sorted(shortcuts.CUES))
def test_each_cue_changes_the_picture(name):
    function, _ = shortcuts.CUES[name]
    image = _film()
    changed = [
        not np.array_equal(np.asarray(function(image, np.random.default_rng(seed))), np.asarray(image))
        for seed in range(5)
    ]
    assert any(changed)


def test_add_cues_is_deterministic_under_a_seed():
    image = _film()
    first = np.asarray(shortcuts.add_cues(image, np.random.default_rng(11)))
    again = np.asarray(shortcuts.add_cues(image, np.random.default_rng(11)))
    assert np.array_equal(first, again)
    others = [np.asarray(shortcuts.add_cues(image, np.random.default_rng(s))) for s in range(12, 20)]
    assert any(not np.array_equal(first, other) for other in others)


def test_text_is_drawn_bright_where_the_film_was_mid_grey():
    image = Image.new("L", (224, 224), 100)
    out = np.asarray(shortcuts.burned_in_text(image, np.random.default_rng(0)))
    assert (out >= 180).sum() > 20  # letters are light, as burned-in annotations are


def test_border_mask_blanks_the_outer_band_only():
    spec = Preprocessing(100, 100, "unit", border=0.1)
    array = prepare(Image.new("L", (300, 300), 200), spec)
    assert array.shape == (100, 100, 3)
    assert array[:10].max() == 0.0
    assert array[-10:].max() == 0.0
    assert array[:, :10].max() == 0.0
    assert array[:, -10:].max() == 0.0
    assert np.allclose(array[10:90, 10:90], 200 / 255.0)


def test_equalisation_spreads_a_narrow_exposure_over_the_full_range():
    narrow = Image.fromarray(np.tile(np.linspace(100, 140, 64, dtype=np.uint8), (64, 1)), mode="L")
    plain = prepare(narrow, Preprocessing(64, 64, "raw"))
    equalised = prepare(narrow, Preprocessing(64, 64, "raw", contrast="equalize"))
    assert np.ptp(plain) <= 41
    assert np.ptp(equalised) >= 200


def test_preprocessing_json_round_trips_and_old_folders_read_as_before():
    spec = Preprocessing(224, 224, "unit", "equalize", 0.1)
    assert Preprocessing.from_json(spec.to_json()) == spec
    old = {"width": 128, "height": 128, "scale": "unit", "color": "grey3"}
    assert Preprocessing.from_json(old) == Preprocessing(128, 128, "unit")
    assert Preprocessing(128, 128).to_json() == old  # nothing new written for a model without the steps


@pytest.mark.parametrize(("field", "value"), [("contrast", "clahe-ish"), ("border", 0.6), ("border", -0.1)])
def test_preprocessing_refuses_unknown_steps(field, value):
    with pytest.raises(ValueError, match=field):
        Preprocessing.from_json({"width": 64, "height": 64, field: value})
