"""Writes: patients, cases, uploads and the inference-job state machine.

Keyword-only, `<entity>_<action>` functions; views, API views and Celery tasks stay adapters
that call these. TensorFlow is reached only through `ml.inference`, imported lazily.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone
from PIL import Image as PILImage

from accounts.models import User
from diagnosis import selectors
from diagnosis.models import Case, Image, InferenceJob, Modality, Patient, Prediction
from diagnosis.uploads import InspectedImage, inspect_upload
from ml.registry import ModelSpecError, model_for

logger = logging.getLogger(__name__)

MODALITY_SHORT = {Modality.XRAY: "X-ray", Modality.CT: "CT"}
MODALITY_WITH_ARTICLE = {Modality.XRAY: "an X-ray", Modality.CT: "a CT"}


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


def _inspect_all(files: list[UploadedFile], *, frame: int | None = None) -> list[InspectedImage]:
    inspected = []
    for upload in files:
        try:
            inspected.append(inspect_upload(upload, size=upload.size, frame=frame))
        except ValidationError as exc:
            name = upload.name or "upload"
            raise ValidationError(f"{name}: {' '.join(exc.messages)}", code=exc.code) from None
    return inspected


def _routed_modality(*, case: Case, name: str, info: InspectedImage, confirm_modality: bool) -> str:
    """The modality whose model classifies this upload; refuses a DICOM of another patient, and
    one of another modality unless the user confirmed that its own modality's model reads it."""
    found = info.dicom
    if found is None:
        return case.modality
    patient = case.patient
    if found.patient.patient_id and found.patient.patient_id != patient.mrn:
        who = f"{found.patient.name} " if found.patient.name else ""
        raise ValidationError(
            f"{name}: this DICOM belongs to patient {who}(patient ID {found.patient.patient_id}), but this case "
            f"is for {patient.name} (record number {patient.mrn}). Nothing was stored; upload it to that "
            "patient's case.",
            code="patient_mismatch",
        )
    if found.modality is None or found.modality == case.modality:
        return case.modality
    if not confirm_modality:
        raise ValidationError(
            f"{name}: this DICOM is {MODALITY_WITH_ARTICLE[found.modality]} image ({found.header['modality']}) but "
            f"this is {MODALITY_WITH_ARTICLE[case.modality]} case. Nothing was stored. To classify it with the "
            f"{MODALITY_SHORT[found.modality]} model, upload it again and confirm the DICOM's modality (the "
            "“Use the DICOM's modality” box; confirm_modality=true in the API), or upload it to "
            f"{MODALITY_WITH_ARTICLE[found.modality]} case.",
            code="modality_mismatch",
        )
    return found.modality


def images_upload(
    *,
    case: Case,
    files: list[UploadedFile],
    uploaded_by: User,
    frame: int | None = None,
    confirm_modality: bool = False,
) -> list[InferenceJob]:
    """Store images and queue one inference job each: all of them, or nothing.

    Every file is inspected before anything is written. Jobs are queued after commit, so a
    worker never looks for a row that does not exist yet; if the broker is down the jobs stay
    pending and the sweeper queues them later. A DICOM is stored as uploaded (private) beside
    the PNG rendered from it; `frame` (1-based) picks the frame of a multi-frame DICOM, and
    `confirm_modality` lets a DICOM of the other modality go to that modality's model.
    """
    if not files:
        raise ValidationError("Choose at least one image to upload.", code="required")
    if case.patient.department_id != uploaded_by.department_id:
        raise ValidationError("Unknown case.", code="unknown_case")
    inspected = _inspect_all(files, frame=frame)
    return _store_images(
        case=case, files=files, inspected=inspected, uploaded_by=uploaded_by, confirm_modality=confirm_modality
    )


def _store_images(
    *,
    case: Case,
    files: list[UploadedFile],
    inspected: list[InspectedImage],
    uploaded_by: User,
    confirm_modality: bool,
) -> list[InferenceJob]:
    modalities = [
        _routed_modality(case=case, name=upload.name or "upload", info=info, confirm_modality=confirm_modality)
        for upload, info in zip(files, inspected, strict=True)
    ]

    written: list[Image] = []
    jobs: list[InferenceJob] = []
    try:
        with transaction.atomic():
            for upload, info, modality in zip(files, inspected, modalities, strict=True):
                image = Image(
                    case=case,
                    modality=modality,
                    original_name=(upload.name or "")[:255],
                    sha256=info.sha256,
                    size_bytes=info.size_bytes,
                    width=info.width,
                    height=info.height,
                    format=info.format,
                    uploaded_by=uploaded_by,
                )
                upload.seek(0)
                written.append(image)
                image.file.save(upload.name or "upload", upload, save=False)
                if info.dicom is not None:
                    image.rendered.save("rendered.png", ContentFile(info.dicom.png), save=False)
                    image.frame_index = info.dicom.frame_index
                    image.sop_instance_uid = info.dicom.sop_instance_uid
                    image.dicom = info.dicom.header
                image.save()
                job = InferenceJob.objects.create(image=image)
                jobs.append(job)
                transaction.on_commit(partial(job_enqueue, job_id=job.pk), robust=True)
    except BaseException:
        for image in written:
            image.file.delete(save=False)
            image.rendered.delete(save=False)
        raise
    return jobs


def image_upload(
    *, case: Case, file: UploadedFile, uploaded_by: User, frame: int | None = None, confirm_modality: bool = False
) -> InferenceJob:
    return images_upload(
        case=case, files=[file], uploaded_by=uploaded_by, frame=frame, confirm_modality=confirm_modality
    )[0]


def image_open(*, image: Image) -> BinaryIO:
    """The pixels to show and classify: the PNG rendered from a DICOM, else the upload itself.
    The original DICOM stays private in `image.file`."""
    return (image.rendered or image.file).open("rb")


def _patient_from_dicom(*, created_by: User, files: list[UploadedFile], inspected: list[InspectedImage]) -> Patient:
    """The patient the DICOM files name (PatientID = record number) in the uploader's department,
    registered from the DICOM's name, birth date and sex when there is none yet."""
    for upload, info in zip(files, inspected, strict=True):
        if info.dicom is None:
            raise ValidationError(
                f"{upload.name or 'upload'} is not a DICOM file: to take the patient from the images, upload "
                "DICOM files only (or choose the patient by record number).",
                code="not_dicom",
            )
    people = {info.dicom.patient for info in inspected if info.dicom is not None}
    ids = {person.patient_id for person in people}
    if "" in ids:
        raise ValidationError(
            "A DICOM file has no patient ID, so the patient cannot be taken from it; choose the patient by record "
            "number instead.",
            code="dicom_no_patient_id",
        )
    if len(ids) > 1:
        raise ValidationError(
            f"The DICOM files belong to different patients (patient IDs {', '.join(sorted(ids))}); upload one "
            "patient's images per case.",
            code="patient_mismatch",
        )
    person = next(iter(people))
    existing = selectors.patient_list_for_user(user=created_by).filter(mrn=person.patient_id).first()
    if existing is not None:
        return existing
    if not person.name:
        raise ValidationError(
            f"Patient ID {person.patient_id} is not registered in your department and the DICOM has no patient "
            "name; register the patient first.",
            code="dicom_no_patient_name",
        )
    return patient_create(
        created_by=created_by,
        mrn=person.patient_id,
        name=person.name[:200],
        birth_date=person.birth_date,
        sex=person.sex,
    )


def case_from_dicom(
    *,
    created_by: User,
    files: list[UploadedFile],
    modality: str | None = None,
    indication: str = "",
    frame: int | None = None,
    confirm_modality: bool = False,
) -> list[InferenceJob]:
    """A new case from DICOM files: the patient matched by PatientID in the uploader's department
    or registered from the DICOM; the modality the given one, else the DICOM's. Every file is
    inspected first; then patient, case, images and jobs are written together, or nothing."""
    if not files:
        raise ValidationError("Choose at least one DICOM file to upload.", code="required")
    inspected = _inspect_all(files, frame=frame)
    with transaction.atomic():
        patient = _patient_from_dicom(created_by=created_by, files=files, inspected=inspected)
        if modality is None:
            found = {info.dicom.modality for info in inspected if info.dicom is not None} - {None}
            if len(found) != 1:
                raise ValidationError(
                    {"modality": "The DICOM does not say whether it is an X-ray or a CT (modality OT/SC); choose one."}
                    if not found
                    else {"modality": "The DICOM files mix X-ray and CT; choose the case's modality."}
                )
            modality = found.pop()
        case = case_create(patient=patient, modality=modality, created_by=created_by, indication=indication)
        return _store_images(
            case=case, files=files, inspected=inspected, uploaded_by=created_by, confirm_modality=confirm_modality
        )


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
    *,
    job_id: int,
    attempt: int,
    model_name: str,
    model_version: str,
    probabilities: dict[str, float],
    heatmap_png: bytes | None = None,
    gate_scores: dict | None = None,
) -> bool:
    """Store the prediction (with its Grad-CAM PNG, private) and finish the job, all or nothing."""
    top_label, top_probability = max(probabilities.items(), key=lambda item: item[1])
    prediction = None
    try:
        with transaction.atomic():
            job = _locked_running(job_id, attempt)
            if job is None:
                return False
            prediction = Prediction(
                job=job,
                probabilities=probabilities,
                top_label=top_label,
                top_probability=top_probability,
                model_name=model_name,
                model_version=model_version,
            )
            if heatmap_png:
                # A random name: the file is private and served by a department-checked view.
                prediction.heatmap.save(f"{uuid.uuid4().hex}.png", ContentFile(heatmap_png), save=False)
            prediction.save()
            job.status = InferenceJob.Status.SUCCEEDED
            job.finished_at = timezone.now()
            job.gate_scores = gate_scores or {}
            job.save(update_fields=["status", "finished_at", "gate_scores"])
    except BaseException:
        if prediction is not None and prediction.heatmap:
            prediction.heatmap.delete(save=False)  # the row was rolled back: leave no orphan file
        raise
    return True


def job_reject(*, job_id: int, attempt: int, code: str, reason: str, gate_scores: dict) -> bool:
    """The input gate refused the image: the job ends REJECTED with the reason and no prediction."""
    with transaction.atomic():
        job = _locked_running(job_id, attempt)
        if job is None:
            return False
        job.status = InferenceJob.Status.REJECTED
        job.rejection_code = InferenceJob.Rejection(code)
        job.rejection_reason = reason
        job.gate_scores = gate_scores
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "rejection_code", "rejection_reason", "gate_scores", "finished_at"])
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

    from ml import gate, heatmaps, inference  # Keras loads here, in the worker only.

    ready: list[tuple[InferenceJob, object, dict]] = []
    for job in batch:
        try:
            with image_open(image=job.image) as handle, PILImage.open(handle) as picture:
                picture.load()
                verdict = gate.check_image(spec, picture, dicom=job.image.dicom)
                if not verdict.accepted:
                    job_reject(
                        job_id=job.pk,
                        attempt=job.attempt,
                        code=verdict.code,
                        reason=verdict.reason,
                        gate_scores=verdict.scores,
                    )
                    continue
                ready.append((job, inference.prepare_input(spec, picture), verdict.scores))
        except (inference.InferenceError, OSError, ValueError) as exc:
            job_fail(job_id=job.pk, attempt=job.attempt, message=f"The model could not process this image: {exc}")
    if not ready:
        return
    try:
        results = inference.analyse_inputs(spec, [array for _, array, _ in ready])
    except inference.InferenceError as exc:
        for job, _, _ in ready:
            job_fail(job_id=job.pk, attempt=job.attempt, message=f"The model could not process this image: {exc}")
        return
    # The distance check needs the features of the same forward pass that classified the image.
    calibration = gate.OodCalibration.load(spec)
    for (job, _, scores), result in zip(ready, results, strict=True):
        verdict = gate.check_features(calibration, result.features)
        scores = {**scores, **verdict.scores}
        if not verdict.accepted:
            job_reject(job_id=job.pk, attempt=job.attempt, code=verdict.code, reason=verdict.reason, gate_scores=scores)
            continue
        job_succeed(
            job_id=job.pk,
            attempt=job.attempt,
            model_name=spec.name,
            model_version=spec.version,
            probabilities=result.probabilities,
            heatmap_png=heatmaps.heatmap_png(result.heatmap),
            gate_scores=scores,
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
