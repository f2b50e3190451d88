"""Upload-to-result latency on a warm worker: p50 and p95 over 50 uploads through the REST API.

Command (PostgreSQL and Redis answering on 127.0.0.1; nothing else may use Redis db 14):

    .venv/bin/python -m benchmarks.upload_latency [--uploads 50] [--image PATH]
        [--model-dir DIR | --architecture tiny|resnet50|efficientnetb0|mobilenetv3small|...]

What runs: each upload is `POST /api/v1/cases/<id>/images/` with token auth through DRF's
APIClient in this process (the whole Django + DRF stack, without an HTTP socket), then
`GET /api/v1/jobs/<id>/` every 20 ms until the job is finished. The job runs on a real
`celery worker` subprocess (prefork, one child, queues xray/ct/maintenance) over Redis
(CELERY_BROKER_URL, default db 14), on PostgreSQL database xnet_bench (DATABASE_URL).
Uploads go one at a time, so this is the latency of an idle, warm worker, not throughput.
The worker is warmed with one job first (its pool child loads every installed model when it starts).

Model: --model-dir names a folder of real (trained) models. Without it the default is the tiny
untrained Keras models of tests/tiny_models.py (64x64 input, one conv layer): the figures are then
the platform's own overhead (upload, queueing, database, decoding, preprocessing), not a real
network's inference. --architecture resnet50 (or another training.architectures backbone) builds
that network with untrained weights at its real input size: real inference cost, meaningless output.
The output always names the model used.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, machine, ms, setup_django, summary

DEFAULT_IMAGE = ROOT / "tests" / "resources" / "kermany_normal_1.jpg"
POLL_INTERVAL = 0.02
# A rejected job (the input gate refused the image) is finished too: polling on would wait for the timeout.
FINISHED = {"succeeded", "failed", "rejected"}


def build_models(folder: Path, architecture: str) -> Path:
    # In a child process: this process plays the web server, which never loads TensorFlow.
    command = [sys.executable, "-m", "benchmarks.upload_latency", "--build-models", str(folder)]
    done = subprocess.run(command + ["--architecture", architecture], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"Could not build the {architecture} models:\n{done.stderr}")
    return folder


def _build_models(folder: Path, architecture: str) -> None:
    """Tiny test models, or one X-ray model with a real backbone and untrained (random) weights."""
    from tests.tiny_models import XRAY_CLASSES, build_model_dir

    if architecture == "tiny":
        build_model_dir(folder)
        return
    from training.architectures import ARCHITECTURES, build_model

    spec = ARCHITECTURES[architecture]
    name = f"xray-{architecture}-untrained"
    (folder / name).mkdir(parents=True)
    build_model(architecture, n_classes=len(XRAY_CLASSES)).save(folder / name / "model.keras")
    meta = {
        "format_version": 1,
        "name": name,
        "version": "0.0.0",
        "modality": "xray",
        "classes": XRAY_CLASSES,
        "preprocessing": {"width": spec.input_size, "height": spec.input_size, "scale": spec.scale, "color": "grey3"},
        "calibration": {"temperature": 1.0},
        "metrics": {},
        "intended_use": "Benchmarks only: untrained weights, real architecture and input size.",
    }
    (folder / name / "model.json").write_text(json.dumps(meta, indent=2))


def shadow_model_dir(spec, folder: Path):
    """A model folder holding the measured model and a copy of it under another name: the silent
    candidate of issue 12, which runs on every upload beside the assistive model."""
    import shutil

    from ml.registry import ModelSpec, read_model_json, write_model_json

    folder.mkdir(parents=True)
    shutil.copytree(spec.folder, folder / spec.folder.name)
    copy = shutil.copytree(spec.folder, folder / f"{spec.folder.name}-shadow")
    meta = read_model_json(copy / "model.json")
    meta["name"] = f"{spec.name}-shadow"
    write_model_json(copy / "model.json", meta)
    return folder, ModelSpec.from_folder(copy)


def upload_and_wait(
    api, case_id: int, image_bytes: bytes, name: str, *, timeout: float = 120, every_job: bool = False
) -> dict:
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
    if every_job:  # --shadow: the next upload starts once the silent candidate's job is done too
        from diagnosis.models import InferenceJob

        while InferenceJob.objects.filter(image_id=job["image"]).exclude(status__in=FINISHED).exists():
            if time.time() > deadline:
                raise SystemExit(f"The shadow job of image {job['image']} did not finish in {timeout:.0f} s")
            time.sleep(POLL_INTERVAL)
    return {"job": job, "started": started, "post": posted - started, "seen": seen - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="a PNG or JPEG chest image")
    parser.add_argument("--model-dir", type=Path, help="a folder of real (trained) models")
    parser.add_argument(
        "--architecture",
        default="tiny",
        help="without --model-dir: 'tiny' (tests/tiny_models.py) or a training.architectures backbone "
        "(resnet50, efficientnetb0, mobilenetv3small, compact, ...) with untrained weights",
    )
    parser.add_argument(
        "--shadow",
        action="store_true",
        help="issue 12: a silent candidate beside the measured (assistive) model, a copy of it under another "
        "name, so every upload gets two jobs; adds the rows 'upload -> both jobs finished' and the shadow's run time",
    )
    parser.add_argument("--build-models", type=Path, help=argparse.SUPPRESS)  # the child of build_models()
    args = parser.parse_args()
    if args.build_models:
        _build_models(args.build_models, args.architecture)
        return

    scratch = Path(tempfile.mkdtemp(prefix="xnet-bench-upload-"))
    setup_django(scratch)

    from django.conf import settings
    from rest_framework.test import APIClient

    from accounts.models import Department, User
    from accounts.services import api_token_create
    from benchmarks.job_cost import only_model
    from diagnosis import services
    from diagnosis.models import InferenceJob, Modality, Patient
    from ml.registry import model_for
    from tests.workers import flush_broker, start_worker

    model_dir = args.model_dir or build_models(scratch / "models", args.architecture)
    spec = model_for(Modality.XRAY, model_dir)
    if spec is None:
        raise SystemExit(f"No X-ray model in {model_dir}")
    shadow = None
    if args.shadow:
        model_dir, shadow = shadow_model_dir(spec, scratch / "models-shadow")
    settings.XNET_MODEL_DIR = model_dir
    image_bytes = args.image.read_bytes()

    department, _ = Department.objects.get_or_create(name="Benchmark uploads")
    user, _ = User.objects.get_or_create(
        username="bench-uploader", defaults={"department": department, "role": User.Role.RADIOLOGIST}
    )
    _, key = api_token_create(user=user, name="upload benchmark", days=1, created_by=None)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    only_model(department, spec)  # one job per upload: the measured model's
    if shadow is not None:  # and a second: the silent candidate's (issue 12)
        from diagnosis.models import ModelDeployment

        ModelDeployment.objects.update_or_create(
            department=department,
            model_name=shadow.name,
            model_version=shadow.version,
            defaults={"modality": shadow.modality, "status": ModelDeployment.Status.SILENT},
        )
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
        every = shadow is not None
        warm = upload_and_wait(api, new_case(), image_bytes, args.image.name, timeout=300, every_job=every)
        if warm["job"]["status"] != "succeeded":
            raise SystemExit(f"Warm-up job failed: {warm['job']['error_message']}")
        warm_seconds = time.time() - warm_start

        runs = [
            upload_and_wait(api, new_case(), image_bytes, args.image.name, every_job=every) for _ in range(args.uploads)
        ]
    finally:
        worker.stop()
        flush_broker(settings.CELERY_BROKER_URL)

    failed = [run["job"] for run in runs if run["job"]["status"] == "failed"]
    rejected = sum(run["job"]["status"] == "rejected" for run in runs)
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
    if shadow is not None:
        image_jobs = {run["job"]["id"]: list(InferenceJob.objects.filter(image_id=run["job"]["image"])) for run in runs}
        if any(len(found) != 2 or any(job.status == "failed" for job in found) for found in image_jobs.values()):
            raise SystemExit("An upload did not get exactly two finished jobs (assistive + shadow)")
        rows["upload -> both jobs finished (worker)"] = [
            max(job.finished_at for job in image_jobs[run["job"]["id"]]).timestamp() - run["started"] for run in runs
        ]
        rows["  shadow job's worker run time"] = [
            next(job for job in image_jobs[run["job"]["id"]] if job.model_name == shadow.name).run_time.total_seconds()
            for run in runs
        ]

    from PIL import Image as PILImage

    with PILImage.open(args.image) as picture:
        image_info = f"{args.image.name}, {picture.width}x{picture.height} {picture.format}, {len(image_bytes)} bytes"
    model_info = f"{spec.name} {spec.version} from {model_dir}"
    if shadow is not None:
        model_info += f"; silent candidate {shadow.name} {shadow.version} (a copy) beside it: two jobs per upload"
    if args.model_dir is None and args.architecture == "tiny":
        model_info += " (tests/tiny_models.py: untrained, 64x64 input, one conv layer)"
    elif args.model_dir is None:
        size = f"{spec.preprocessing.width}x{spec.preprocessing.height}"
        model_info += f" ({args.architecture} backbone, untrained weights, {size} input)"
    print(f"XNET upload-to-result latency: {len(runs)} uploads, one at a time, warm worker")
    print(f"  machine : {machine()}")
    print(f"  model   : {model_info}")
    print(f"  image   : {image_info}")
    print("  path    : DRF APIClient (token auth) -> PostgreSQL -> Redis -> celery worker (prefork, 1 child)")
    if rejected:
        print(f"  rejected: {rejected} of {len(runs)} jobs (the input gate refused the image; counted as finished)")
    print(f"  warm-up : first job {ms(warm_seconds).strip()} (includes the pool child loading every installed model)")
    print(f"  {'':36}{'p50':>11}{'p95':>11}{'max':>11}")
    for label, values in rows.items():
        p50, p95, worst = summary(values)
        print(f"  {label:36}{ms(p50)}  {ms(p95)}  {ms(worst)}")
    print(f"  (the API poll runs every {POLL_INTERVAL * 1000:.0f} ms, so 'seen' includes up to that much wait)")


if __name__ == "__main__":
    main()
