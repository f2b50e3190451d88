"""Worker batching gain: throughput of one real Celery worker draining a backlog, batch 1 vs batch N.

    .venv/bin/python -m benchmarks.batching [--images 64] [--batch-sizes 1,4,16] [--concurrency 1,2]
        [--model-dir DIR | --architecture resnet50|compact|tiny|...] [--image PATH]

`--images` uploads are committed in one transaction, so their jobs reach the broker together (a
backlog: a ward's morning films, a CT series); a real worker subprocess (prefork, one child) on
Redis and PostgreSQL, started with XNET_BATCH_MAX_SIZE set to each batch size in turn, drains them.
--concurrency runs each batch size with that many worker processes too (`celery worker -c N`, each
with XNET_INFERENCE_THREADS = cores / N). Throughput is images divided by the time from the commit
to the last job's finish. Every pool child has loaded its models and one warm-up job has run before
the timed drain, so model loading is not counted. Only the measured model is active in the
benchmark's department (one job per upload). Default model: a ResNet50 (the reference X-ray
design) at 224 px with untrained weights: real inference cost, meaningless output.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, setup_django
from benchmarks.job_cost import only_model
from benchmarks.upload_latency import DEFAULT_IMAGE, build_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-sizes", default="1,4,16")
    parser.add_argument("--concurrency", default="1", help="worker processes, e.g. 1,2")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="a PNG or JPEG chest image")
    parser.add_argument("--model-dir", type=Path, help="a folder of real (trained) models")
    parser.add_argument("--architecture", default="resnet50", help="without --model-dir: backbone to build")
    args = parser.parse_args()
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    concurrencies = [int(n) for n in args.concurrency.split(",")]

    scratch = Path(tempfile.mkdtemp(prefix="xnet-bench-batching-"))
    setup_django(scratch)

    from django.conf import settings
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import transaction

    from accounts.models import Department, User
    from diagnosis import services
    from diagnosis.models import InferenceJob, Modality, Patient
    from ml.registry import model_for
    from tests.workers import flush_broker, start_worker, wait_for

    model_dir = args.model_dir or build_models(scratch / "models", args.architecture)
    spec = model_for(Modality.XRAY, model_dir)
    if spec is None:
        raise SystemExit(f"No X-ray model in {model_dir}")
    image_bytes = args.image.read_bytes()
    department, _ = Department.objects.get_or_create(name="Benchmark batching")
    user, _ = User.objects.get_or_create(
        username="bench-batcher", defaults={"department": department, "role": User.Role.RADIOLOGIST}
    )
    only_model(department, spec)
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
    cores = os.cpu_count() or 1
    for processes in concurrencies:
        for batch_size in batch_sizes:
            flush_broker(settings.CELERY_BROKER_URL)
            worker = start_worker(
                scratch / f"worker-{processes}-{batch_size}",
                broker_url=settings.CELERY_BROKER_URL,
                model_dir=model_dir,
                media_root=scratch / "media",
                env={
                    "XNET_BATCH_MAX_SIZE": str(batch_size),
                    "XNET_INFERENCE_THREADS": str(max(1, cores // processes)),
                },
                concurrency=processes,
            )
            try:
                worker.wait_ready(timeout=120)
                wait_for(
                    lambda: worker.log().count(" before its first job: ") >= processes,  # noqa: B023
                    timeout=300,
                    what="every pool child's models",
                    log=worker.log,
                )
                wait_finished(upload(1), timeout=300)
                start = time.time()
                last_finish = wait_finished(upload(args.images), timeout=1800)
            finally:
                worker.stop()
                flush_broker(settings.CELERY_BROKER_URL)
            elapsed = last_finish - start
            results.append((processes, batch_size, elapsed, args.images / elapsed))

    print(f"XNET worker batching: {args.images} queued X-ray uploads drained by one worker")
    print(f"  machine : {machine()}")
    print(f"  model   : {spec.name} {spec.version}, input {spec.preprocessing.width}x{spec.preprocessing.height}")
    print(f"  image   : {args.image.name}")
    print()
    print("| processes | XNET_BATCH_MAX_SIZE | drain time | images/s | gain vs 1 process, batch 1 |")
    print("|---:|---:|---:|---:|---:|")
    base = results[0][3]
    for processes, batch_size, elapsed, rate in results:
        print(f"| {processes} | {batch_size} | {elapsed:.1f} s | {rate:.1f} | x{rate / base:.2f} |")
    print(f"  load average after: {', '.join(f'{value:.2f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()
