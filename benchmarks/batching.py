"""Worker batching gain: throughput of one real Celery worker draining a backlog, batch 1 vs batch N.

    .venv/bin/python -m benchmarks.batching [--images 64] [--batch-sizes 1,4,16]
        [--model-dir DIR | --architecture resnet50|compact|tiny|...] [--image PATH]

`--images` uploads are committed in one transaction, so their jobs reach the broker together (a
backlog: a ward's morning films, a CT series); a real worker subprocess (prefork, one child) on
Redis and PostgreSQL, started with XNET_BATCH_MAX_SIZE set to each batch size in turn, drains them.
Throughput is images divided by the time from the commit to the last job's finish. One warm-up job
per worker first, so model loading is not counted. Default model: a ResNet50 (the reference X-ray
design) at 224 px with untrained weights: real inference cost, meaningless output.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, setup_django
from benchmarks.upload_latency import DEFAULT_IMAGE, build_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-sizes", default="1,4,16")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="a PNG or JPEG chest image")
    parser.add_argument("--model-dir", type=Path, help="a folder of real (trained) models")
    parser.add_argument("--architecture", default="resnet50", help="without --model-dir: backbone to build")
    args = parser.parse_args()
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]

    scratch = Path(tempfile.mkdtemp(prefix="xnet-bench-batching-"))
    setup_django(scratch)

    from django.conf import settings
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import transaction

    from accounts.models import Department, User
    from diagnosis import services
    from diagnosis.models import InferenceJob, Modality, Patient
    from ml.registry import model_for
    from tests.workers import flush_broker, start_worker

    model_dir = args.model_dir or build_models(scratch / "models", args.architecture)
    spec = model_for(Modality.XRAY, model_dir)
    if spec is None:
        raise SystemExit(f"No X-ray model in {model_dir}")
    image_bytes = args.image.read_bytes()
    department, _ = Department.objects.get_or_create(name="Benchmark batching")
    user, _ = User.objects.get_or_create(
        username="bench-batcher", defaults={"department": department, "role": User.Role.RADIOLOGIST}
    )
    patient = Patient.objects.filter(department=department, mrn="BENCH-BATCH").first() or services.patient_create(
        created_by=user, mrn="BENCH-BATCH", name="Benchmark Patient"
    )

    def upload(count: int) -> list[int]:
        with transaction.atomic():
            case = services.case_create(patient=patient, modality=Modality.XRAY, created_by=user, indication="bench")
            jobs = [
                services.image_upload(
                    case=case, file=SimpleUploadedFile(args.image.name, image_bytes), uploaded_by=user
                )
                for _ in range(count)
            ]
        return [job.pk for job in jobs]

    def wait_finished(job_ids: list[int], timeout: float) -> float:
        deadline = time.monotonic() + timeout
        finished = InferenceJob.objects.filter(pk__in=job_ids, status__in=InferenceJob.FINISHED)
        while finished.count() < len(job_ids):
            if time.monotonic() > deadline:
                raise SystemExit(f"Jobs did not finish within {timeout} s")
            time.sleep(0.05)
        jobs = InferenceJob.objects.filter(pk__in=job_ids)
        if failed := jobs.exclude(status=InferenceJob.Status.SUCCEEDED).first():
            raise SystemExit(f"A job failed: {failed.error_message}")
        return max(job.finished_at.timestamp() for job in jobs)

    results = []
    for batch_size in batch_sizes:
        flush_broker(settings.CELERY_BROKER_URL)
        worker = start_worker(
            scratch / f"worker-{batch_size}",
            broker_url=settings.CELERY_BROKER_URL,
            model_dir=model_dir,
            media_root=scratch / "media",
            env={"XNET_BATCH_MAX_SIZE": str(batch_size)},
        )
        try:
            worker.wait_ready(timeout=120)
            wait_finished(upload(1), timeout=300)  # loads the model
            start = time.time()
            last_finish = wait_finished(upload(args.images), timeout=1800)
        finally:
            worker.stop()
            flush_broker(settings.CELERY_BROKER_URL)
        elapsed = last_finish - start
        results.append((batch_size, elapsed, args.images / elapsed))

    print(f"XNET worker batching: {args.images} queued X-ray uploads drained by one worker (one process)")
    print(f"  machine : {machine()}")
    print(f"  model   : {spec.name} {spec.version}, input {spec.preprocessing.width}x{spec.preprocessing.height}")
    print(f"  image   : {args.image.name}")
    print()
    print("| XNET_BATCH_MAX_SIZE | drain time | images/s | gain vs 1 |")
    print("|---:|---:|---:|---:|")
    base = next((rate for size, _, rate in results if size == 1), results[0][2])
    for batch_size, elapsed, rate in results:
        print(f"| {batch_size} | {elapsed:.1f} s | {rate:.1f} | x{rate / base:.2f} |")


if __name__ == "__main__":
    main()
