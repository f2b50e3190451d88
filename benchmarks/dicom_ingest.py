"""DICOM ingestion: a study sent by a real Orthanc to XNET's listener, classified, results back.

    DATABASE_URL=... CELERY_BROKER_URL=... .venv/bin/python -m benchmarks.dicom_ingest [--instances 100]

Orthanc (started here on free ports, /usr/sbin/Orthanc) holds a study of `--instances` chest CR
instances (a real radiograph from tests/resources, each its own SOPInstanceUID) and sends it to
XNET with its REST API (POST /modalities/xnet/store, one association, synchronous). XNET runs as in
production: `manage.py run_dicom_listener` and one Celery worker (queues xray, ct, maintenance,
dicom, prefork, one child) on PostgreSQL and Redis, with the installed X-ray model (assistive in
the benchmark's department). Measured:
  stored/s       instances divided by the time Orthanc's store call took (every one stored: case,
                 image, rendered PNG, job, all committed; the C-STORE answer waits for that);
  last result    from the start of the send until the last SR / secondary capture is stored in
                 Orthanc (the delivery's sent_at, after Orthanc answered its C-STORE).
A one-instance study goes first so model loading is not counted.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, machine, setup_django

XNET_AE = "XNET-BENCH"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the last result")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="xnet-bench-dicom-"))
    setup_django(scratch)

    import numpy as np
    import pydicom
    from django.conf import settings
    from PIL import Image as PILImage
    from pydicom.uid import generate_uid

    from accounts.models import Department
    from diagnosis.model_status import deployment_set_status, deployments_sync
    from diagnosis.models import InferenceJob, Modality, ModelDeployment
    from dicomnet.models import Delivery, DicomNode, ReceivedInstance, StudyLink
    from ml.registry import model_for
    from tests.dicom_files import UID_ROOT, make_dicom
    from tests.orthanc import Orthanc
    from tests.workers import flush_broker, free_port, start_worker, wait_for

    spec = model_for(Modality.XRAY, settings.XNET_MODEL_DIR)
    if spec is None:
        raise SystemExit(f"No X-ray model in {settings.XNET_MODEL_DIR}")
    department, _ = Department.objects.get_or_create(name=f"Benchmark DICOM {os.getpid()}")
    deployments_sync(departments=[department])
    deployment = ModelDeployment.objects.get(department=department, model_name=spec.name, model_version=spec.version)
    deployment_set_status(deployment=deployment, status="assistive", changed_by=None, reason="benchmark")

    with PILImage.open(ROOT / "tests" / "resources" / "kermany_normal_1.jpg") as picture:
        pixels = np.asarray(picture.convert("L"), dtype=np.uint16) * 16
    template = pydicom.dcmread(
        io.BytesIO(make_dicom(pixels, modality="CR", patient_id="BENCH-DICOM", patient_name="Bench^Dicom", sex="F"))
    )

    def study(count: int) -> tuple[str, list[bytes]]:
        study_uid, series_uid = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
        files = []
        for number in range(1, count + 1):
            ds = template.copy()
            ds.file_meta = template.file_meta.copy()
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(UID_ROOT)
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
            ds.InstanceNumber = number
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            files.append(buffer.getvalue())
        return study_uid, files

    listener_port = free_port()
    env = {**os.environ, "XNET_DICOM_AE_TITLE": XNET_AE, "XNET_DICOM_PORT": str(listener_port)}
    listener_log = scratch / "listener.log"
    listener = subprocess.Popen(
        [sys.executable, "manage.py", "run_dicom_listener"],
        cwd=ROOT,
        env=env,
        stdout=listener_log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    # Its own AE title per run: the benchmark database keeps earlier runs' nodes.
    orthanc = Orthanc(scratch / "orthanc", xnet_ae=XNET_AE, xnet_port=listener_port, ae_title=f"BENCH{os.getpid()}")
    flush_broker(settings.CELERY_BROKER_URL)
    worker = start_worker(
        scratch / "worker",
        broker_url=settings.CELERY_BROKER_URL,
        model_dir=Path(settings.XNET_MODEL_DIR),
        media_root=Path(settings.MEDIA_ROOT),
        env={"XNET_DICOM_AE_TITLE": XNET_AE},
    )
    try:
        orthanc.start()
        DicomNode.objects.create(
            department=department,
            name="Bench Orthanc",
            ae_title=orthanc.ae_title,
            host="127.0.0.1",
            port=orthanc.dicom_port,
            direction=DicomNode.Direction.BOTH,
        )
        worker.wait_ready(timeout=120)
        time.sleep(3)  # the listener process imports Django meanwhile

        def send(count: int, timeout: float) -> tuple[float, float, dict]:
            study_uid, files = study(count)
            ids = [orthanc.upload(data) for data in files]
            start = time.time()
            orthanc.store_to_xnet(ids, timeout=int(timeout))
            stored_at = time.time()
            case = StudyLink.objects.get(department=department, study_instance_uid=study_uid).case
            stored = ReceivedInstance.objects.filter(study__case=case).count()
            if stored != count:
                raise SystemExit(f"{stored} of {count} instances stored; see {listener_log}")

            def done() -> dict | None:
                jobs = InferenceJob.objects.filter(image__case=case)
                if jobs.exclude(status__in=InferenceJob.FINISHED).exists():
                    return None
                # Jobs of silent models run too (issue 12); only the assistive model's results go out.
                succeeded = jobs.filter(
                    status=InferenceJob.Status.SUCCEEDED, model_name=spec.name, model_version=spec.version
                ).count()
                deliveries = Delivery.objects.filter(case=case)
                if deliveries.filter(status=Delivery.Status.FAILED).exists():
                    raise SystemExit(f"A delivery failed: {deliveries.filter(status='failed').first().last_error}")
                if deliveries.count() < 2 * succeeded or deliveries.exclude(status=Delivery.Status.SENT).exists():
                    return None
                return {
                    "jobs": jobs.filter(model_name=spec.name, model_version=spec.version).count(),
                    "succeeded": succeeded,
                    "deliveries": deliveries.count(),
                    "last": max((d.sent_at.timestamp() for d in deliveries), default=stored_at),
                    "study": study_uid,
                }

            result = wait_for(
                done, timeout=timeout, what="the last result back in Orthanc", interval=0.1, log=worker.log
            )
            return stored_at - start, result["last"] - start, result

        send(1, timeout=600)  # warm-up: model load in the worker child
        store_time, last_time, result = send(args.instances, timeout=args.timeout)
        in_pacs = len(orthanc.instances_in_study(result["study"]))
    finally:
        worker.stop()
        orthanc.stop()
        listener.terminate()
        listener.wait(timeout=15)
        flush_broker(settings.CELERY_BROKER_URL)

    print(
        f"XNET DICOM ingestion: a {args.instances}-instance chest CR study sent by Orthanc (C-STORE, one association)"
    )
    print(f"  machine : {machine()}")
    print(f"  model   : {spec.name} {spec.version}; one worker (prefork, one child), one listener process")
    print(
        f"  instance: {pixels.shape[1]}x{pixels.shape[0]} px, 16-bit, {len(template.PixelData) // 1024} KiB of pixels"
    )
    print()
    print("| instances | store time | stored/s | last result back in Orthanc | jobs succeeded | objects sent back |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {args.instances} | {store_time:.1f} s | {args.instances / store_time:.1f} | {last_time:.1f} s | "
        f"{result['succeeded']} of {result['jobs']} | {result['deliveries']} (Orthanc holds {in_pacs} in the study) |"
    )


if __name__ == "__main__":
    main()
