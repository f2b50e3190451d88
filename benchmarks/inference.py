"""The worker's inference path against ONNX Runtime's bare forward pass, on the installed models.

    .venv/bin/python benchmarks/inference.py [--model-dir ml/models] [--repeats 30] [--tensorflow]
        [--spin 0|1|both]

For each model folder, in fresh processes that never import TensorFlow:
- worker: `ml.inference.analyse_inputs` as the worker calls it (ONNX Runtime on model.onnx:
  probabilities, gate features, Grad-CAM upsampled to the input size, calibration);
- bare: an ONNX Runtime session with default options on the model as Keras's own
  `model.export(format="onnx")` writes it (probabilities only), the same batch.
The two are timed in separate fresh processes, worker, bare, bare, worker (medians of --repeats
calls each, after a warm-up; see compare()), at batch 1 and 16; ratio = bare / worker, so >= 1.0
means the worker's whole path costs no more than the forward pass alone. Load time and peak
memory are the worker process's own.
--spin sets XNET_INFERENCE_SPIN for the worker's session (0, the shipped default: idle threads
sleep; 1: they spin, as ONNX Runtime's default session, the bare one, always does; both: a row
each).
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


def measure(folder: Path, repeats: int, engine: str, side: str = "worker") -> dict:
    """Median ms per call at each batch size, for one side in this process: "worker" (the
    worker's path on `engine`) or "bare" (ONNX Runtime's default session on bare.onnx)."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from ml import inference
    from ml.registry import ModelSpec

    spec = ModelSpec.from_folder(folder)
    p = spec.preprocessing
    rng = np.random.default_rng(0)
    high = 255.0 if p.scale == "raw" else 1.0
    result = {"model": spec.label, "engine": engine}
    start = time.perf_counter()
    if side == "bare":
        import onnxruntime as ort

        bare = ort.InferenceSession(str(folder / "bare.onnx"), providers=["CPUExecutionProvider"])
        bare_input = bare.get_inputs()[0].name
    elif engine == "auto":
        inference.load(spec)
    else:
        inference._analyser(spec)
    if side == "worker":
        result["load_s"] = round(time.perf_counter() - start, 2)
    for batch_size in BATCH_SIZES:
        arrays = [rng.random((p.height, p.width, 3), dtype=np.float32) * high for _ in range(batch_size)]
        if side == "bare":
            call = partial(bare.run, None, {bare_input: np.stack(arrays)})
        else:
            call = partial(inference.analyse_inputs, spec, arrays, engine=engine)
        times = []
        for index in range(repeats + 1):  # the first call warms up
            started = time.perf_counter()
            call()
            if index:
                times.append(time.perf_counter() - started)
        result[f"{side}_ms_b{batch_size}"] = statistics.median(times) * 1000
    if side == "worker":
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        result["tensorflow_imported"] = "tensorflow" in sys.modules
    return result


def compare(copy: str, repeats: int) -> dict:
    """The worker's path and the bare session, each in fresh processes of their own, in the order
    worker, bare, bare, worker: two sessions in one process fight over the same two cores (a
    spinning pool keeps them busy after its call returns), and the ABBA order balances a load
    that drifts. Each figure is the mean of its two processes' medians."""
    runs = [
        _child("--one", copy, "--repeats", str(repeats), "--side", side)
        for side in ("worker", "bare", "bare", "worker")
    ]
    row = {**runs[0], **runs[1]}
    for size in BATCH_SIZES:
        worker = (runs[0][f"worker_ms_b{size}"] + runs[3][f"worker_ms_b{size}"]) / 2
        bare = (runs[1][f"bare_ms_b{size}"] + runs[2][f"bare_ms_b{size}"]) / 2
        row[f"worker_ms_b{size}"] = round(worker, 2)
        row[f"bare_ms_b{size}"] = round(bare, 2)
        row[f"ratio_b{size}"] = round(bare / worker, 2)
    row["peak_rss_mb"] = max(runs[0]["peak_rss_mb"], runs[3]["peak_rss_mb"])
    return row


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
    parser.add_argument(
        "--spin", choices=("0", "1", "both"), default="0", help="XNET_INFERENCE_SPIN for the worker's session"
    )
    parser.add_argument("--prepare", type=Path, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--side", default="worker", choices=("worker", "bare"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        print(json.dumps({"folder": str(prepare(*args.prepare))}))
        return
    if args.one:
        print(json.dumps(measure(args.one, args.repeats, args.engine, args.side)))
        return
    print(f"load average (1/5/15 min) before: {load_average()}; {os.cpu_count()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory(prefix="xnet-bench-") as scratch:
        for meta in sorted(args.model_dir.glob("*/model.json")):
            copy = _child("--prepare", str(meta.parent), scratch)["folder"]
            for spin in ("0", "1") if args.spin == "both" else (args.spin,):
                os.environ["XNET_INFERENCE_SPIN"] = spin  # the child's worker session reads it
                rows.append({**compare(copy, args.repeats), "spin": spin})
            if args.tensorflow:
                row = _child("--one", copy, "--repeats", str(args.repeats), "--engine", "tensorflow")
                for size in BATCH_SIZES:
                    row[f"worker_ms_b{size}"] = round(row[f"worker_ms_b{size}"], 2)
                rows.append(row)
    columns = ["model", "engine", "spin", "load_s"]
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
