"""Upload-to-result latency on a warm worker: p50 and p95 over 50 uploads through the REST API.

Command (PostgreSQL and Redis answering on 127.0.0.1; nothing else may use Redis db 14):

    .venv/bin/python -m benchmarks.upload_latency [--uploads 50] [--image PATH] [--model-dir DIR]

What runs: each upload is `POST /api/v1/cases/<id>/images/` with token auth through DRF's
APIClient in this process (the whole Django + DRF stack, without an HTTP socket), then
`GET /api/v1/jobs/<id>/` every 20 ms until the job is finished. The job runs on a real
`celery worker` subprocess (prefork, one child, queues xray/ct/maintenance) over Redis
(CELERY_BROKER_URL, default db 14), on PostgreSQL database xnet_bench (DATABASE_URL).
Uploads go one at a time, so this is the latency of an idle, warm worker, not throughput.
The worker is warmed with one job first (TensorFlow import and model load).

Model: unless --model-dir names a folder of real models, the tiny untrained Keras models of
tests/tiny_models.py (64x64 input, one conv layer): the figures are then the platform's own
overhead (upload, queueing, database, decoding, preprocessing), not a real network's inference.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, machine, ms, setup_django, summary

DEFAULT_IMAGE = ROOT / "tests" / "resources" / "kermany_normal_1.jpg"
POLL_INTERVAL = 0.02
FINISHED = {"succeeded", "failed"}


def build_tiny_models(folder: Path) -> Path:
    # In a child process: this process plays the web server, which never loads TensorFlow.
    code = (
        "import sys; from pathlib import Path; from tests.tiny_models import build_model_dir as b; b(Path(sys.argv[1]))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(folder)], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"Could not build the tiny models:\n{done.stderr}")
    return folder


def upload_and_wait(api, case_id: int, image_bytes: bytes, name: str, *, timeout: float = 120) -> dict:
    from django.core.files.uploadedfile import SimpleUploadedFile

    started = time.time()
    response = api.post(
        f"/api/v1/cases/{case_id}/images/",
        {"file": SimpleUploadedFile(name, image_bytes)},
        format="multipart",
    )
    posted = time.time()
    if response.status_code != 202:
        raise SystemExit(f"Upload refused: {response.status_code} {response.content[:500]!r}")
    job_url = response["Location"]
    deadline = started + timeout
    while True:
        job = api.get(job_url).json()
        if job["status"] in FINISHED:
            seen = time.time()
            break
        if time.time() > deadline:
            raise SystemExit(f"Job {job['id']} still {job['status']} after {timeout:.0f} s")
        time.sleep(POLL_INTERVAL)
    return {"job": job, "started": started, "post": posted - started, "seen": seen - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="a PNG or JPEG chest image")
    parser.add_argument("--model-dir", type=Path, help="real models (default: tests/tiny_models.py)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="xnet-bench-upload-"))
    setup_django(scratch)

    from django.conf import settings
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from accounts.models import Department, User
    from diagnosis import services
    from diagnosis.models import InferenceJob, Modality, Patient
    from ml.registry import model_for
    from tests.workers import flush_broker, start_worker

    model_dir = args.model_dir or build_tiny_models(scratch / "models")
    settings.XNET_MODEL_DIR = model_dir
    spec = model_for(Modality.XRAY, model_dir)
    if spec is None:
        raise SystemExit(f"No X-ray model in {model_dir}")
    image_bytes = args.image.read_bytes()

    department, _ = Department.objects.get_or_create(name="Benchmark uploads")
    user, _ = User.objects.get_or_create(
        username="bench-uploader", defaults={"department": department, "role": User.Role.RADIOLOGIST}
    )
    token, _ = Token.objects.get_or_create(user=user)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    patient = Patient.objects.filter(department=department, mrn="BENCH-UPLOAD").first() or services.patient_create(
        created_by=user, mrn="BENCH-UPLOAD", name="Benchmark Patient"
    )

    flush_broker(settings.CELERY_BROKER_URL)
    worker = start_worker(
        scratch / "worker", broker_url=settings.CELERY_BROKER_URL, model_dir=model_dir, media_root=scratch / "media"
    )
    try:
        worker.wait_ready(timeout=120)

        def new_case() -> int:
            case = services.case_create(
                patient=patient, modality=Modality.XRAY, created_by=user, indication="benchmark"
            )
            return case.pk

        warm_start = time.time()
        warm = upload_and_wait(api, new_case(), image_bytes, args.image.name, timeout=300)
        if warm["job"]["status"] != "succeeded":
            raise SystemExit(f"Warm-up job failed: {warm['job']['error_message']}")
        warm_seconds = time.time() - warm_start

        runs = [upload_and_wait(api, new_case(), image_bytes, args.image.name) for _ in range(args.uploads)]
    finally:
        worker.stop()
        flush_broker(settings.CELERY_BROKER_URL)

    failed = [run["job"] for run in runs if run["job"]["status"] != "succeeded"]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(runs)} jobs failed, e.g.: {failed[0]['error_message']}")
    jobs = {job.pk: job for job in InferenceJob.objects.filter(pk__in=[run["job"]["id"] for run in runs])}
    rows = {
        "POST .../images/ (202)": [run["post"] for run in runs],
        "upload -> result seen by API poll": [run["seen"] for run in runs],
        "upload -> job finished (worker)": [
            jobs[run["job"]["id"]].finished_at.timestamp() - run["started"] for run in runs
        ],
        "  of which queue wait": [jobs[run["job"]["id"]].queue_wait.total_seconds() for run in runs],
        "  of which worker run time": [jobs[run["job"]["id"]].run_time.total_seconds() for run in runs],
    }

    from PIL import Image as PILImage

    with PILImage.open(args.image) as picture:
        image_info = f"{args.image.name}, {picture.width}x{picture.height} {picture.format}, {len(image_bytes)} bytes"
    model_info = f"{spec.name} {spec.version} from {model_dir}"
    if args.model_dir is None:
        model_info += " (tests/tiny_models.py: untrained, 64x64 input, one conv layer)"
    print(f"XNET upload-to-result latency: {len(runs)} uploads, one at a time, warm worker")
    print(f"  machine : {machine()}")
    print(f"  model   : {model_info}")
    print(f"  image   : {image_info}")
    print("  path    : DRF APIClient (token auth) -> PostgreSQL -> Redis -> celery worker (prefork, 1 child)")
    print(f"  warm-up : first job {ms(warm_seconds).strip()} (worker imports TensorFlow and loads the model)")
    print(f"  {'':36}{'p50':>11}{'p95':>11}{'max':>11}")
    for label, values in rows.items():
        p50, p95, worst = summary(values)
        print(f"  {label:36}{ms(p50)}  {ms(p95)}  {ms(worst)}")
    print(f"  (the API poll runs every {POLL_INTERVAL * 1000:.0f} ms, so 'seen' includes up to that much wait)")


if __name__ == "__main__":
    main()
