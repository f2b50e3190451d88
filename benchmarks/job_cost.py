"""What one worker job costs beside its model call: claim, decode and gate, model, heatmap PNG, store.

    .venv/bin/python -m benchmarks.job_cost [--jobs 30] [--model-dir ml/models] [--image PATH]

In this process, without Celery: each round uploads one X-ray image through `services.image_upload`
(not timed; its queue message is dropped), then runs `services.job_run` on its job exactly as the
worker's task does (batch 1, warm: the model is loaded and one job run before timing). Phases are
timed by wrapping the functions job_run calls (job_claim_batch, ml.inference.analyse_inputs,
ml.heatmaps.heatmap_png); "decode + gate" is what lies between the claim and the model call,
"result gate" what lies between the model call and the PNG (the gate's check of the model's
features), "store" what follows the PNG. SQL statements per phase are counted with Django's query capture
(transaction statements included). ratio = whole job / model call (the issue-11 goal: <= 2).
Listeners of other apps that run when the store
commits (connection.run_and_clear_commit_hooks: webhooks, DICOM delivery) are timed apart too.
The model call alone is also timed bare (the same `analyse_inputs` on a prepared array) between
rounds, so a busy machine shows in both. Database: DATABASE_URL (default xnet_bench); broker:
CELERY_BROKER_URL (default Redis db 14, flushed at the end).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, machine, setup_django

DEFAULT_IMAGE = ROOT / "tests" / "resources" / "kermany_normal_1.jpg"


class Phases:
    """Wall-clock marks and query-log positions at each phase boundary of one job_run."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.marks: dict[str, tuple[float, int]] = {}

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, (time.perf_counter(), len(self.connection.queries)))

    def wrap(self, module, attribute: str, before: str, after: str) -> None:
        original = getattr(module, attribute)

        def timed(*args, **kwargs):
            self.mark(before)
            try:
                return original(*args, **kwargs)
            finally:
                self.mark(after)

        setattr(module, attribute, timed)


def only_model(department, spec) -> None:
    """Make spec the department's one active model version (assistive), the others retired.
    (Nothing to do in a tree from before model statuses: it runs the modality's newest model.)"""
    try:
        from diagnosis.models import ModelDeployment
    except ImportError:
        return

    ModelDeployment.objects.filter(department=department).update(status=ModelDeployment.Status.RETIRED)
    ModelDeployment.objects.update_or_create(
        department=department,
        model_name=spec.name,
        model_version=spec.version,
        defaults={"modality": spec.modality, "status": ModelDeployment.Status.ASSISTIVE},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "ml" / "models")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument(
        "--profile", action="store_true", help="after the table: the last job's SQL and a cProfile of 10 more stores"
    )
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="xnet-bench-jobcost-"))
    setup_django(scratch)

    from django.conf import settings
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.models import Department, User
    from diagnosis import services
    from diagnosis.models import InferenceJob, Modality, Patient
    from ml import heatmaps, inference
    from ml.registry import model_for
    from tests.workers import flush_broker

    settings.XNET_MODEL_DIR = args.model_dir
    settings.XNET_BATCH_MAX_SIZE = 1
    spec = model_for(Modality.XRAY, args.model_dir)
    if spec is None:
        raise SystemExit(f"No X-ray model in {args.model_dir}")
    image_bytes = args.image.read_bytes()
    department, _ = Department.objects.get_or_create(name="Benchmark job cost")
    user, _ = User.objects.get_or_create(
        username="bench-jobcost", defaults={"department": department, "role": User.Role.RADIOLOGIST}
    )
    patient = Patient.objects.filter(department=department, mrn="BENCH-JOBCOST").first() or services.patient_create(
        created_by=user, mrn="BENCH-JOBCOST", name="Benchmark Patient"
    )
    # Only the measured model runs here (issue 12 runs every active version on each upload).
    only_model(department, spec)
    # Older rounds' jobs would join a batch: leave none pending.
    InferenceJob.objects.filter(status=InferenceJob.Status.PENDING).update(status=InferenceJob.Status.FAILED)

    def upload() -> int:
        case = services.case_create(patient=patient, modality=Modality.XRAY, created_by=user, indication="bench")
        job = services.image_upload(case=case, file=SimpleUploadedFile(args.image.name, image_bytes), uploaded_by=user)
        return job.pk

    with open(args.image, "rb") as handle:
        array = inference.prepare_input(spec, handle)

    def bare_model_call() -> float:
        start = time.perf_counter()
        inference.analyse_inputs(spec, [array])
        return time.perf_counter() - start

    # Other apps' listeners (webhooks, DICOM delivery...) run when the store commits: timed apart.
    hooks = {"seconds": 0.0, "statements": 0}
    run_hooks = connection.run_and_clear_commit_hooks

    def timed_hooks() -> None:
        start, before = time.perf_counter(), len(connection.queries)
        try:
            run_hooks()
        finally:
            hooks["seconds"] += time.perf_counter() - start
            hooks["statements"] += len(connection.queries) - before

    connection.run_and_clear_commit_hooks = timed_hooks
    original = (services.job_claim_batch, inference.analyse_inputs, heatmaps.heatmap_png)
    hooks_row = "  of which other apps' commit hooks"
    names = ("claim", "decode + gate", "model", "result gate", "png", "store", hooks_row, "job")
    rows: dict[str, list[float]] = {name: [] for name in names}
    statements: dict[str, list[int]] = {name: [] for name in rows}
    bare: list[float] = []
    try:
        services.job_run(job_id=upload())  # warm-up: model load, first-call costs
        for _ in range(3):
            bare_model_call()
        flush_broker(settings.CELERY_BROKER_URL)
        for _ in range(args.jobs):
            job_id = upload()
            bare.append(bare_model_call())
            phases = Phases(connection)
            hooks.update(seconds=0.0, statements=0)
            phases.wrap(services, "job_claim_batch", "claim", "claimed")
            phases.wrap(inference, "analyse_inputs", "model", "modelled")
            phases.wrap(heatmaps, "heatmap_png", "png", "pnged")
            try:
                with CaptureQueriesContext(connection):
                    phases.mark("start")
                    services.job_run(job_id=job_id)
                    phases.mark("end")
            finally:
                services.job_claim_batch, inference.analyse_inputs, heatmaps.heatmap_png = original
            status = InferenceJob.objects.get(pk=job_id).status
            if status != InferenceJob.Status.SUCCEEDED:
                raise SystemExit(f"Job {job_id} ended {status}")
            m = phases.marks
            spans = {
                "claim": ("claim", "claimed"),
                "decode + gate": ("claimed", "model"),
                "model": ("model", "modelled"),
                "result gate": ("modelled", "png"),
                "png": ("png", "pnged"),
                "store": ("pnged", "end"),
                "job": ("start", "end"),
            }
            for name, (first, last) in spans.items():
                rows[name].append(m[last][0] - m[first][0])
                statements[name].append(m[last][1] - m[first][1])
            rows[hooks_row].append(hooks["seconds"])
            statements[hooks_row].append(hooks["statements"])
        if args.profile:
            last_sql = profile(args, upload, services, connection, CaptureQueriesContext)
    finally:
        flush_broker(settings.CELERY_BROKER_URL)

    from PIL import Image as PILImage

    with PILImage.open(args.image) as picture:
        image_info = f"{args.image.name}, {picture.width}x{picture.height} {picture.format}"
    print(f"XNET worker job cost at batch 1: {args.jobs} jobs, in-process job_run (no Celery), warm model")
    print(f"  machine : {machine()}")
    print(f"  model   : {spec.label}, input {spec.preprocessing.width}x{spec.preprocessing.height}")
    print(f"  image   : {image_info}")
    print()
    print("| phase | p50 | p95 | SQL statements (median) |")
    print("|---|---:|---:|---:|")
    for name, values in rows.items():
        p95 = statistics.quantiles(values, n=20, method="inclusive")[-1]
        print(
            f"| {name} | {statistics.median(values) * 1000:.1f} ms | {p95 * 1000:.1f} ms "
            f"| {statistics.median(statements[name]):.0f} |"
        )
    job_p50 = statistics.median(rows["job"])
    own_p50 = statistics.median([job - hook for job, hook in zip(rows["job"], rows[hooks_row], strict=True)])
    print()
    print(f"model call timed alone between rounds: p50 {statistics.median(bare) * 1000:.1f} ms")
    print(
        f"ratio whole job / model call (p50s, same run): {job_p50 / statistics.median(rows['model']):.2f} "
        f"(against the bare call: {job_p50 / statistics.median(bare):.2f}); goal <= 2"
    )
    print(
        f"  without other apps' commit hooks: job p50 {own_p50 * 1000:.1f} ms, "
        f"ratio {own_p50 / statistics.median(rows['model']):.2f}"
    )
    print(f"  load average after: {', '.join(f'{value:.2f}' for value in __import__('os').getloadavg())}")
    if args.profile:
        print(last_sql)


def profile(args, upload, services, connection, capture) -> str:
    """The SQL of one more job, then cProfile over 10 jobs' job_run (cumulative time, top 30)."""
    import cProfile
    import io
    import pstats

    with capture(connection) as queries:
        services.job_run(job_id=upload())
    lines = ["", "SQL of one job_run:"] + [f"  {query['time']}s {query['sql'][:220]}" for query in queries]
    profiler = cProfile.Profile()
    for _ in range(10):
        job_id = upload()
        profiler.enable()
        services.job_run(job_id=job_id)
        profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(60)
    return "\n".join(lines) + "\n" + out.getvalue()


if __name__ == "__main__":
    main()
