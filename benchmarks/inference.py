"""CPU inference speed of the installed models: load time, images/s at batch 1 and 16, peak memory.

    .venv/bin/python benchmarks/inference.py [--model-dir ml/models] [--repeats 30]

Runs in a fresh process per model so load time and peak memory are the model's own. Prints a
Markdown table; copy it into the README with the date and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(folder: Path, repeats: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from ml import inference
    from ml.registry import ModelSpec

    spec = ModelSpec.from_folder(folder)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    inference.load_model(spec)
    load_s = time.perf_counter() - start
    p = spec.preprocessing
    rng = np.random.default_rng(0)
    result = {"model": spec.label, "load_s": round(load_s, 2)}
    for batch_size in (1, 16):
        batch = rng.random((batch_size, p.height, p.width, 3), dtype=np.float32)
        inference.predict_batch(spec, batch)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            inference.predict_batch(spec, batch)
        elapsed = time.perf_counter() - start
        result[f"images_per_s_batch{batch_size}"] = round(batch_size * repeats / elapsed, 1)
        result[f"ms_per_call_batch{batch_size}"] = round(elapsed / repeats * 1000, 1)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["rss_before_load_mb"] = round(rss_before / 1024)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "ml" / "models")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.repeats)))
        return
    rows = []
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for meta in sorted(args.model_dir.glob("*/model.json")):
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(meta.parent), "--repeats", str(args.repeats)],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    columns = ["model", "load_s", "ms_per_call_batch1", "images_per_s_batch1", "ms_per_call_batch16",
               "images_per_s_batch16", "peak_rss_mb"]  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")


if __name__ == "__main__":
    main()
