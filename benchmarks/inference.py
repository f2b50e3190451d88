"""The worker's inference path against ONNX Runtime's bare forward pass, on the installed models.

    .venv/bin/python benchmarks/inference.py [--model-dir ml/models] [--repeats 30] [--tensorflow]

For each model folder, in a fresh process that never imports TensorFlow:
- worker: `ml.inference.analyse_inputs` as the worker calls it (ONNX Runtime on model.onnx:
  probabilities, gate features, Grad-CAM upsampled to the input size, calibration);
- bare: an ONNX Runtime session with default options on the model as Keras's own
  `model.export(format="onnx")` writes it (probabilities only), the same batch.
The two are timed alternately in the same run (medians of --repeats calls each, after a warm-up),
at batch 1 and 16; ratio = bare / worker, so >= 1.0 means the worker's whole path costs no more
than the forward pass alone. Load time and peak memory are the worker process's own.
--tensorflow adds the TensorFlow path (`engine="tensorflow"`) in another fresh process.

Conversions (model.onnx when the folder has no current one, and the bare export) are made in a
temporary copy of the folder: the benchmark writes nothing into the model directory. The load
average is printed before and after: a figure taken on a busy machine says so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH_SIZES = (1, 16)


def prepare(folder: Path, scratch: Path) -> Path:
    """A copy of folder with a current model.onnx and bare.onnx (needs TensorFlow: a subprocess)."""
    sys.path.insert(0, str(ROOT))
    import keras
    import numpy as np

    from ml import export_onnx

    copy = scratch / folder.name
    shutil.copytree(folder, copy)
    if not export_onnx.is_fresh(copy):
        export_onnx.convert(copy)
    model = keras.saving.load_model(copy / "model.keras", compile=False)
    model(np.zeros((1, *model.inputs[0].shape[1:]), dtype=np.float32))  # export needs a called model
    model.export(str(copy / "bare.onnx"), format="onnx", verbose=False)
    return copy


def measure(folder: Path, repeats: int, engine: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from ml import inference
    from ml.registry import ModelSpec

    spec = ModelSpec.from_folder(folder)
    start = time.perf_counter()
    if engine == "auto":
        inference.load(spec)
    else:
        inference._analyser(spec)
    load_s = time.perf_counter() - start
    p = spec.preprocessing
    rng = np.random.default_rng(0)
    high = 255.0 if p.scale == "raw" else 1.0
    result = {"model": spec.label, "engine": engine, "load_s": round(load_s, 2)}
    bare = None
    if engine == "auto":
        import onnxruntime as ort

        bare = ort.InferenceSession(str(folder / "bare.onnx"), providers=["CPUExecutionProvider"])
        bare_input = bare.get_inputs()[0].name
    for batch_size in BATCH_SIZES:
        arrays = [rng.random((p.height, p.width, 3), dtype=np.float32) * high for _ in range(batch_size)]
        batch = np.stack(arrays)
        worker_times, bare_times = [], []
        calls = [("worker", partial(inference.analyse_inputs, spec, arrays, engine=engine))]
        if bare is not None:
            calls.append(("bare", partial(bare.run, None, {bare_input: batch})))
        for index in range(repeats + 1):  # the first round warms up
            order = calls[::-1] if index % 2 else calls  # alternate: neither always runs first
            for name, call in order:
                start = time.perf_counter()
                call()
                elapsed = time.perf_counter() - start
                if index:
                    (worker_times if name == "worker" else bare_times).append(elapsed)
        worker_ms = statistics.median(worker_times) * 1000
        result[f"worker_ms_b{batch_size}"] = round(worker_ms, 2)
        result[f"worker_img_s_b{batch_size}"] = round(batch_size / worker_ms * 1000, 1)
        if bare_times:
            bare_ms = statistics.median(bare_times) * 1000
            result[f"bare_ms_b{batch_size}"] = round(bare_ms, 2)
            result[f"ratio_b{batch_size}"] = round(bare_ms / worker_ms, 2)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    return result


def _child(*args: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "ml" / "models")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--tensorflow", action="store_true", help="also time the TensorFlow path")
    parser.add_argument("--prepare", type=Path, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        print(json.dumps({"folder": str(prepare(*args.prepare))}))
        return
    if args.one:
        print(json.dumps(measure(args.one, args.repeats, args.engine)))
        return
    print(f"load average (1/5/15 min) before: {load_average()}; {os.cpu_count()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory(prefix="xnet-bench-") as scratch:
        for meta in sorted(args.model_dir.glob("*/model.json")):
            copy = _child("--prepare", str(meta.parent), scratch)["folder"]
            rows.append(_child("--one", copy, "--repeats", str(args.repeats)))
            if args.tensorflow:
                rows.append(_child("--one", copy, "--repeats", str(args.repeats), "--engine", "tensorflow"))
    columns = ["model", "engine", "load_s"]
    for size in BATCH_SIZES:
        columns += [f"worker_ms_b{size}", f"bare_ms_b{size}", f"ratio_b{size}"]
    columns += ["peak_rss_mb", "tensorflow_imported"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    print(f"load average (1/5/15 min) after: {load_average()}")


if __name__ == "__main__":
    main()
