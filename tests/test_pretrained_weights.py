"""training.pretrained: backbone weights read out of a pinned wheel, checked and recorded.

The test builds its own small wheel (a zip holding a Keras model with a nested backbone), so no
network is touched; the pins of the real packages are checked for form only."""

import hashlib
import json
import zipfile

import numpy as np
import pytest

from training import pretrained
from training.architectures import ARCHITECTURES


def _tiny_wheel(tmp_path, *, layer_name="tiny_backbone", member="tinypkg/models/model.keras"):
    import keras

    keras.utils.set_random_seed(1)
    backbone_in = keras.Input((16, 16, 3))
    backbone_out = keras.layers.Conv2D(4, 3, name="conv")(backbone_in)
    backbone = keras.Model(backbone_in, backbone_out, name=layer_name)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    model_file = tmp_path / "model.keras"
    model.save(model_file)
    wheel = tmp_path / "tinypkg-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(model_file, member)
        archive.writestr("tinypkg-0.1.0.dist-info/METADATA", "Name: tinypkg\nVersion: 0.1.0\n")
    source = pretrained.WeightsSource(
        arch="tiny",
        package="tinypkg",
        version="0.1.0",
        wheel_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
        member=member,
        backbone_layer=layer_name,
        licence="MIT (test)",
        notes="built by the test",
    )
    return wheel, source, backbone


def test_extracts_the_backbone_weights_exactly_with_provenance(tmp_path):
    import keras

    wheel, source, backbone = _tiny_wheel(tmp_path)
    weights = pretrained.extract_backbone(source, wheel, tmp_path / "weights")

    assert weights.name == "tiny_imagenet_notop.weights.h5"
    fresh_in = keras.Input((16, 16, 3))
    fresh = keras.Model(fresh_in, keras.layers.Conv2D(4, 3)(fresh_in))
    fresh.load_weights(weights)
    for expected, got in zip(backbone.get_weights(), fresh.get_weights(), strict=True):
        assert np.array_equal(expected, got)

    record = pretrained.provenance_of(weights)
    assert record["package"] == "tinypkg"
    assert record["version"] == "0.1.0"
    assert record["wheel_sha256"] == source.wheel_sha256
    assert record["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert record["licence"] == "MIT (test)"
    assert json.loads(weights.with_suffix(".json").read_text()) == record


def test_a_wheel_that_does_not_match_its_pin_is_refused_and_writes_nothing(tmp_path):
    wheel, source, _ = _tiny_wheel(tmp_path)
    wrong = pretrained.WeightsSource(**{**source.__dict__, "wheel_sha256": "0" * 64})
    with pytest.raises(pretrained.PretrainedError, match="does not match the pinned"):
        pretrained.extract_backbone(wrong, wheel, tmp_path / "weights")
    assert not (tmp_path / "weights").exists()


def test_a_wheel_without_the_model_file_or_layer_is_refused(tmp_path):
    wheel, source, _ = _tiny_wheel(tmp_path)
    missing_member = pretrained.WeightsSource(**{**source.__dict__, "member": "tinypkg/other.keras"})
    with pytest.raises(pretrained.PretrainedError, match="holds no tinypkg/other.keras"):
        pretrained.extract_backbone(missing_member, wheel, tmp_path / "w1")
    missing_layer = pretrained.WeightsSource(**{**source.__dict__, "backbone_layer": "resnet"})
    with pytest.raises(pretrained.PretrainedError, match="no layer 'resnet'"):
        pretrained.extract_backbone(missing_layer, wheel, tmp_path / "w2")


def test_registry_pins_name_known_architectures_with_full_hashes():
    for name, source in pretrained.SOURCES.items():
        assert name == source.arch
        assert source.arch in ARCHITECTURES
        assert len(source.wheel_sha256) == 64
        int(source.wheel_sha256, 16)
        assert source.licence
