"""Writes: patients, cases, uploads and the inference-job state machine.

Keyword-only, `<entity>_<action>` functions; views, API views and Celery tasks stay adapters
that call these. TensorFlow is reached only through `ml.inference`, imported lazily.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from diagnosis.models import Case, Image, InferenceJob, Modality, Patient, Prediction
from diagnosis.uploads import InspectedImage, inspect_upload
from ml.registry import ModelSpecError, model_for

logger = logging.getLogger(__name__)

MODALITY_SHORT = {Modality.XRAY: "X-ray", Modality.CT: "CT"}


# Patients and cases ----------------------------------------------------------------------


def patient_create(
    *,
    created_by: User,
    mrn: str,
    name: str,
    birth_date: date | None = None,
    sex: str = Patient.Sex.UNKNOWN,
) -> Patient:
    if created_by.department_id is None:
        raise ValidationError("Only members of a department can register patients.")
    patient = Patient(
        department_id=created_by.department_id,
        mrn=mrn.strip(),
        name=name.strip(),
        birth_date=birth_date,
        sex=sex,
        created_by=created_by,
    )
    patient.full_clean()
    patient.save()
    return patient


def case_create(*, patient: Patient, modality: str, created_by: User, indication: str = "") -> Case:
    if patient.department_id != created_by.department_id:
        # Callers look patients up through department-scoped selectors; this is the last guard.
        raise ValidationError({"patient": "Unknown patient."})
    case = Case(patient=patient, modality=modality, indication=indication.strip(), created_by=created_by)
    case.full_clean()
    case.save()
    return case


# Uploads ---------------------------------------------------------------------------------


def _inspect_all(files: list[UploadedFile]) -> list[InspectedImage]:
    inspected = []
    for upload in files:
        try:
            inspected.append(inspect_upload(upload, size=upload.size))
        except ValidationError as exc:
            name = upload.name or "upload"
            raise ValidationError(f"{name}: {' '.join(exc.messages)}", code=exc.code) from None
    return inspected


def images_upload(*, case: Case, files: list[UploadedFile], uploaded_by: User) -> list[InferenceJob]:
    """Store images and queue one inference job each: all of them, or nothing.

    Every file is inspected before anything is written. Jobs are queued after commit, so a
    worker never looks for a row that does not exist yet; if the broker is down the jobs stay
    pending and the sweeper queues them later.
    """
    if not files:
        raise ValidationError("Choose at least one image to upload.", code="required")
    if case.patient.department_id != uploaded_by.department_id:
        raise ValidationError("Unknown case.", code="unknown_case")
    inspected = _inspect_all(files)

    written: list[Image] = []
    jobs: list[InferenceJob] = []
    try:
        with transaction.atomic():
            for upload, info in zip(files, inspected, strict=True):
                image = Image(
                    case=case,
                    modality=case.modality,
                    original_name=(upload.name or "")[:255],
                    sha256=info.sha256,
                    size_bytes=info.size_bytes,
                    width=info.width,
                    height=info.height,
                    format=info.format,
                    uploaded_by=uploaded_by,
                )
                upload.seek(0)
                image.file.save(upload.name or "upload", upload, save=False)
                written.append(image)
                image.save()
                job = InferenceJob.objects.create(image=image)
                jobs.append(job)
                transaction.on_commit(partial(job_enqueue, job_id=job.pk), robust=True)
    except BaseException:
        for image in written:
            image.file.delete(save=False)
        raise
    return jobs


def image_upload(*, case: Case, file: UploadedFile, uploaded_by: User) -> InferenceJob:
    return images_upload(case=case, files=[file], uploaded_by=uploaded_by)[0]


def image_open(*, image: Image) -> BinaryIO:
    return image.file.open("rb")


# Inference jobs --------------------------------------------------------------------------


def job_enqueue(*, job_id: int) -> bool:
    """Publish the job to its modality's queue; False (job left pending) if the broker is down."""
    from diagnosis.tasks import run_inference_job

    job = InferenceJob.objects.select_related("image__case").filter(pk=job_id).first()
    if job is None or job.status != InferenceJob.Status.PENDING:
        return False
    queued_at = timezone.now()
    try:
        run_inference_job.apply_async(args=[job.pk], queue=job.image.modality)
    except Exception:
        # The upload is committed already; the sweeper will queue this job once the broker
        # is back. Failing the request here would lose nothing but confuse the user.
        logger.exception("Could not queue inference job %s; the sweeper will retry", job.pk)
        return False
    # Whatever the status now: an idle worker may have claimed the job already, and filtering on
    # PENDING here left queued_at empty on a job that ran.
    InferenceJob.objects.filter(pk=job.pk).update(queued_at=queued_at)
    return True


def job_claim(*, job_id: int) -> InferenceJob | None:
    """Mark a pending job running and return it; None when there is nothing to do.

    The row lock plus the status check make redelivery safe: a second delivery of the same
    message finds the job running or finished and returns.
    """
    with transaction.atomic():
        job = InferenceJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != InferenceJob.Status.PENDING:
            return None
        if job.attempt >= settings.XNET_JOB_MAX_ATTEMPTS:
            _fail(job, f"Gave up after {job.attempt} attempts; the worker stopped each time.")
            return None
        job.status = InferenceJob.Status.RUNNING
        job.attempt += 1
        job.started_at = timezone.now()
        job.finished_at = None
        job.error_message = ""
        job.save(update_fields=["status", "attempt", "started_at", "finished_at", "error_message"])
    return InferenceJob.objects.select_related("image__case").get(pk=job.pk)


def _fail(job: InferenceJob, message: str) -> None:
    job.status = InferenceJob.Status.FAILED
    job.error_message = message
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "error_message", "finished_at"])


def _locked_running(job_id: int, attempt: int) -> InferenceJob | None:
    """The job, locked, if it is still running the given attempt (inside a transaction)."""
    job = InferenceJob.objects.select_for_update().filter(pk=job_id).first()
    if job is None or job.status != InferenceJob.Status.RUNNING or job.attempt != attempt:
        logger.warning("Job %s attempt %s is no longer current; result discarded", job_id, attempt)
        return None
    return job


def job_fail(*, job_id: int, attempt: int, message: str) -> bool:
    with transaction.atomic():
        job = _locked_running(job_id, attempt)
        if job is None:
            return False
        _fail(job, message)
    return True


def job_release(*, job_id: int, attempt: int) -> None:
    """Give a claimed job back (before a retry), so the retried task can claim it again."""
    with transaction.atomic():
        job = _locked_running(job_id, attempt)
        if job is not None:
            job.status = InferenceJob.Status.PENDING
            job.started_at = None
            job.save(update_fields=["status", "started_at"])


def job_succeed(
    *, job_id: int, attempt: int, model_name: str, model_version: str, probabilities: dict[str, float]
) -> bool:
    top_label, top_probability = max(probabilities.items(), key=lambda item: item[1])
    with transaction.atomic():
        job = _locked_running(job_id, attempt)
        if job is None:
            return False
        Prediction.objects.create(
            job=job,
            probabilities=probabilities,
            top_label=top_label,
            top_probability=top_probability,
            model_name=model_name,
            model_version=model_version,
        )
        job.status = InferenceJob.Status.SUCCEEDED
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "finished_at"])
    return True


def _claim_more(*, first: InferenceJob, limit: int) -> list[InferenceJob]:
    """Claim up to `limit` other pending jobs of the same modality, oldest first.

    skip_locked: jobs another worker is claiming right now are left to it. Their own queue
    messages arrive later, find them running or finished and return (claiming is idempotent).
    """
    if limit <= 0:
        return []
    now = timezone.now()
    with transaction.atomic():
        jobs = list(
            InferenceJob.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(
                status=InferenceJob.Status.PENDING,
                image__modality=first.image.modality,
                attempt__lt=settings.XNET_JOB_MAX_ATTEMPTS,
            )
            .exclude(pk=first.pk)
            .order_by("created_at", "id")[:limit]
        )
        for job in jobs:
            job.status = InferenceJob.Status.RUNNING
            job.attempt += 1
            job.started_at = now
            job.finished_at = None
            job.error_message = ""
            job.save(update_fields=["status", "attempt", "started_at", "finished_at", "error_message"])
    return list(InferenceJob.objects.select_related("image__case").filter(pk__in=[job.pk for job in jobs]))


def job_claim_batch(*, job_id: int) -> list[InferenceJob]:
    """The task's job, claimed, plus other pending jobs of its modality for one model call.

    Predicting several images in one call is much cheaper per image than one call each. The
    batch is bounded in size (XNET_BATCH_MAX_SIZE) and in how long a lone job waits for company
    (XNET_BATCH_WAIT_MS; 0, the default, batches only what is already waiting).
    """
    first = job_claim(job_id=job_id)
    if first is None:
        return []
    batch = [first, *_claim_more(first=first, limit=settings.XNET_BATCH_MAX_SIZE - 1)]
    if len(batch) < settings.XNET_BATCH_MAX_SIZE and settings.XNET_BATCH_WAIT_MS > 0:
        time.sleep(settings.XNET_BATCH_WAIT_MS / 1000)
        batch += _claim_more(first=first, limit=settings.XNET_BATCH_MAX_SIZE - len(batch))
    return batch


def job_run(*, job_id: int) -> None:
    """Claim a job (and a batch of others waiting), classify outside any transaction, store results."""
    batch = job_claim_batch(job_id=job_id)
    if not batch:
        return
    first, others = batch[0], batch[1:]
    try:
        _run_batch(batch)
    except BaseException as exc:
        # A time limit, a database error or a crash. The task records what happened to its own
        # job (a retry for a database error, a failure otherwise); the others go back to their
        # queue untouched rather than wait for the sweeper.
        if isinstance(exc, (OperationalError, InterfaceError)):
            job_release(job_id=first.pk, attempt=first.attempt)
        for job in others:
            job_release(job_id=job.pk, attempt=job.attempt)
            job_enqueue(job_id=job.pk)
        raise


def _run_batch(batch: list[InferenceJob]) -> None:
    modality = batch[0].image.modality
    try:
        spec = model_for(modality, settings.XNET_MODEL_DIR)
    except ModelSpecError as exc:
        spec, message = None, f"The installed model cannot be used: {exc}"
    else:
        message = f"no model installed for {MODALITY_SHORT[modality]}"
    if spec is None:
        for job in batch:
            job_fail(job_id=job.pk, attempt=job.attempt, message=message)
        return
    InferenceJob.objects.filter(pk__in=[job.pk for job in batch]).update(
        model_name=spec.name, model_version=spec.version
    )

    from ml import inference  # Keras loads here, in the worker only.

    ready: list[tuple[InferenceJob, object]] = []
    for job in batch:
        try:
            with image_open(image=job.image) as handle:
                ready.append((job, inference.prepare_input(spec, handle)))
        except (inference.InferenceError, OSError, ValueError) as exc:
            job_fail(job_id=job.pk, attempt=job.attempt, message=f"The model could not process this image: {exc}")
    if not ready:
        return
    try:
        results = inference.predict_inputs(spec, [array for _, array in ready])
    except inference.InferenceError as exc:
        for job, _ in ready:
            job_fail(job_id=job.pk, attempt=job.attempt, message=f"The model could not process this image: {exc}")
        return
    for (job, _), probabilities in zip(ready, results, strict=True):
        job_succeed(
            job_id=job.pk,
            attempt=job.attempt,
            model_name=spec.name,
            model_version=spec.version,
            probabilities=probabilities,
        )


def job_abort(*, job_id: int, message: str) -> None:
    """Fail whatever attempt is running (the task hit its time limit or an unexpected error)."""
    job = InferenceJob.objects.filter(pk=job_id).first()
    if job is not None:
        job_fail(job_id=job_id, attempt=job.attempt, message=message)


@dataclass(frozen=True)
class SweepReport:
    requeued: int
    failed: int


def jobs_sweep(*, now: datetime | None = None) -> SweepReport:
    """Re-queue jobs a lost message or a dead worker left behind, so no case is stranded.

    Running past XNET_JOB_STALE_AFTER means the worker died (the hard time limit would have
    ended a live one): the job goes back to pending, or fails after too many attempts.
    Pending jobs never published (broker down at upload) or published long ago are queued again;
    a duplicate message is harmless because claiming is idempotent.
    """
    now = now or timezone.now()
    Status = InferenceJob.Status
    requeue: list[int] = []
    failed = 0
    with transaction.atomic():
        stale = InferenceJob.objects.select_for_update(skip_locked=True).filter(
            status=Status.RUNNING, started_at__lt=now - timedelta(seconds=settings.XNET_JOB_STALE_AFTER)
        )
        for job in stale:
            if job.attempt >= settings.XNET_JOB_MAX_ATTEMPTS:
                _fail(job, f"Gave up after {job.attempt} attempts; the worker stopped each time.")
                failed += 1
                continue
            job.status = Status.PENDING
            job.started_at = None
            job.queued_at = None
            job.save(update_fields=["status", "started_at", "queued_at"])
            requeue.append(job.pk)
    unqueued_before = now - timedelta(seconds=settings.XNET_JOB_UNQUEUED_GRACE)
    requeue_before = now - timedelta(seconds=settings.XNET_JOB_REQUEUE_PENDING_AFTER)
    pending = InferenceJob.objects.filter(status=Status.PENDING).filter(
        Q(queued_at__isnull=True, created_at__lt=unqueued_before) | Q(queued_at__lt=requeue_before)
    )
    requeue.extend(pending.exclude(pk__in=requeue).values_list("pk", flat=True))
    queued = sum(job_enqueue(job_id=job_id) for job_id in requeue)
    if requeue or failed:
        logger.info("Sweeper: %s jobs re-queued (%s published), %s failed", len(requeue), queued, failed)
    return SweepReport(requeued=len(requeue), failed=failed)
