"""Writes: patients, cases, uploads and the inference-job state machine.

Keyword-only, `<entity>_<action>` functions; views, API views and Celery tasks stay adapters
that call these. TensorFlow is reached only through `ml.inference`, imported lazily.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from PIL import Image as PILImage

from accounts.models import User
from diagnosis import selectors
from diagnosis.dicom import DicomPatient
from diagnosis.models import Case, Image, InferenceJob, Modality, Patient, Prediction
from diagnosis.signals import image_withdrawn, job_retried, reading_order_once
from diagnosis.uploads import InspectedImage, inspect_upload, read_worker_copy, worker_copy
from ml.registry import ModelSpecError, find_model, installed_models, model_for

logger = logging.getLogger(__name__)

MODALITY_SHORT = {Modality.XRAY: "X-ray", Modality.CT: "CT"}
MODALITY_WITH_ARTICLE = {Modality.XRAY: "an X-ray", Modality.CT: "a CT"}
MAX_WITHDRAWAL_REASON = 2000


class CaseConflict(Exception):
    """The case's state forbids the write (it is signed): a 409, not bad input."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _is_signed(case_id: int) -> bool:
    # The report lives in the reviews app, which builds on this one: ask by relation name.
    return Case.objects.filter(pk=case_id, report__isnull=False).exists()


def _refuse_if_signed(case: Case, *, doing: str) -> None:
    if _is_signed(case.pk):
        raise CaseConflict(
            f"Case {case.pk} is signed: its images and results are frozen with the report, so {doing}. "
            "Start a new case for this patient instead (corrections to the report are addenda).",
            code="case_signed",
        )


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


class UploadedJobs(list):
    """The jobs an upload queued (a list, as before issue 12), with the images it stored: an
    image gets one job per active model version of its modality, or none where no version is
    active, so the images cannot be read off the jobs."""

    def __init__(self, jobs: Iterable[InferenceJob] = (), *, images: list[Image]) -> None:
        super().__init__(jobs)
        self.images = images


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
) -> UploadedJobs:
    """Store images and queue their inference jobs (one per active model version of the image's
    modality in the department: model_status.active_deployments): all of them, or nothing.

    A signed case takes no new image (CaseConflict, code case_signed): what was signed stays
    what the record shows. Every file is inspected before anything is written. Jobs are queued after commit, so a
    worker never looks for a row that does not exist yet; if the broker is down the jobs stay
    pending and the sweeper queues them later. A DICOM is stored as uploaded (private) beside
    the PNG rendered from it; `frame` (1-based) picks the frame of a multi-frame DICOM, and
    `confirm_modality` lets a DICOM of the other modality go to that modality's model.
    """
    if not files:
        raise ValidationError("Choose at least one image to upload.", code="required")
    if case.patient.department_id != uploaded_by.department_id:
        raise ValidationError("Unknown case.", code="unknown_case")
    _refuse_if_signed(case, doing="no image can be added")
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
) -> UploadedJobs:
    modalities = [
        _routed_modality(case=case, name=upload.name or "upload", info=info, confirm_modality=confirm_modality)
        for upload, info in zip(files, inspected, strict=True)
    ]

    written: list[Image] = []
    jobs: list[InferenceJob] = []
    try:
        # reading_order_once: the image and each of its jobs would refresh the case's reading
        # order as they are saved; it is refreshed once, before the transaction commits.
        with transaction.atomic(), reading_order_once():
            # The case row lock orders this upload against a signature (report_sign takes the
            # same lock): either the images are in before the report is written, or they are
            # refused. It also numbers the images without two uploads taking one position.
            Case.objects.select_for_update().filter(pk=case.pk).first()
            _refuse_if_signed(case, doing="no image can be added")
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
                _save_worker_copy(image, info)
                if info.dicom is not None:
                    image.rendered.save("rendered.png", ContentFile(info.dicom.png), save=False)
                    image.frame_index = info.dicom.frame_index
                    image.sop_instance_uid = info.dicom.sop_instance_uid
                    image.dicom = info.dicom.header
                image.save()
                for job in _jobs_create(image=image, department_id=case.patient.department_id):
                    jobs.append(job)
                    transaction.on_commit(lambda pk=job.pk: job_enqueue(job_id=pk), robust=True)
    except BaseException:
        for image in written:
            if image.file:
                image.file.storage.delete(worker_copy_name(image))
            image.file.delete(save=False)
            image.rendered.delete(save=False)
        raise
    return UploadedJobs(jobs, images=written)


def worker_copy_name(image: Image) -> str:
    """Beside the stored upload (private, like it): what the worker reads instead of decoding it."""
    return f"{image.file.name}.worker.npz"


def _save_worker_copy(image: Image, info: InspectedImage) -> None:
    """Store the upload as the worker reads it, decoded and resized to each installed model's
    input size of its modality, with the gate's measures: the upload is decoded once, here
    (a 2048 px JPEG took about 50 ms to decode, at upload and again in the worker)."""
    sizes = {(spec.preprocessing.width, spec.preprocessing.height) for spec in _installed(image.modality)}
    data = worker_copy(info, sizes)
    if data is not None:
        image.file.storage.save(worker_copy_name(image), ContentFile(data))


def _jobs_create(*, image: Image, department_id: int) -> list[InferenceJob]:
    """One job per model version active (silent or assistive) for the image's modality in the
    department, the assistive one first, each naming its model. None when no version is active:
    the image is stored for reading and pages say no model runs for it."""
    from diagnosis.model_status import active_deployments

    return [
        InferenceJob.objects.create(image=image, model_name=row.model_name, model_version=row.model_version)
        for row in active_deployments(department=department_id, modality=image.modality)
    ]


def image_upload(
    *, case: Case, file: UploadedFile, uploaded_by: User, frame: int | None = None, confirm_modality: bool = False
) -> InferenceJob | None:
    """One image; returns its first job (the assistive model's where one is active), or None
    when no model version is active for its modality here (the image is stored all the same)."""
    jobs = images_upload(
        case=case, files=[file], uploaded_by=uploaded_by, frame=frame, confirm_modality=confirm_modality
    )
    return jobs[0] if jobs else None


def image_open(*, image: Image) -> BinaryIO:
    """The pixels to show and classify: the PNG rendered from a DICOM, else the upload itself.
    The original DICOM stays private in `image.file`."""
    return (image.rendered or image.file).open("rb")


def _name_words(name: str) -> set[str]:
    return {word for word in re.split(r"[^\w]+", name.casefold()) if word}


def _check_same_person(patient: Patient, person: DicomPatient) -> None:
    """Refuse filing a DICOM under a registered patient whose record number matches but whose
    name, birth date or sex disagree: a reused or mistyped PatientID must not merge two people.

    Only what both sides know is compared. Names match when one's words contain the other's,
    in any order and case ("Doe^Jane^Anne" is "Jane Doe" with her middle name).
    """
    differences = []
    dicom_words, our_words = _name_words(person.name), _name_words(patient.name)
    if dicom_words and our_words and not (dicom_words <= our_words or our_words <= dicom_words):
        differences.append("name")
    if person.birth_date and patient.birth_date and person.birth_date != patient.birth_date:
        differences.append("birth date")
    known = {Patient.Sex.FEMALE, Patient.Sex.MALE}
    if person.sex in known and patient.sex in known and person.sex != patient.sex:
        differences.append("sex")
    if not differences:
        return

    def identity(name: str, birth_date: date | None, sex: str) -> str:
        born = birth_date.isoformat() if birth_date else "birth date unknown"
        return f"{name or 'no name'}, born {born}, sex {Patient.Sex(sex).label.lower()}"

    ours = identity(patient.name, patient.birth_date, patient.sex)
    theirs = identity(person.name, person.birth_date, person.sex)
    raise ValidationError(
        f"Record number {patient.mrn} is registered in your department as {ours}, "
        f"but this DICOM (patient ID {person.patient_id}) names {theirs}: "
        f"the {' and '.join(differences)} disagree. Nothing was stored. Check the patient's identity; if the "
        "DICOM is right, correct the PatientID at the modality or PACS, or choose the patient by record number.",
        code="patient_identity_mismatch",
    )


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
        _check_same_person(existing, person)
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
) -> UploadedJobs:
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


def image_can_withdraw(*, image: Image, user: User) -> bool:
    """Who may withdraw an image: the person who uploaded it, or an admin of its department."""
    if not user.is_active or user.department_id is None or user.department_id != image.case.patient.department_id:
        return False
    return user.pk == image.uploaded_by_id or user.is_department_admin


def image_withdraw(*, image: Image, withdrawn_by: User, reason: str) -> Image:
    """Withdraw a mistaken upload of an unsigned case, with a written reason.

    Nothing is deleted: the row and the file stay (retention rules decide about the file); the
    image leaves pages, the worklist, the API and reports, its pending job is dropped, and the
    audit trail records who, when and why (the image_withdrawn signal, in this transaction).
    Refusals: PermissionDenied (neither the uploader nor a department admin), ValidationError
    (no reason), CaseConflict (the case is signed, or the image was withdrawn already).
    """
    if not image_can_withdraw(image=image, user=withdrawn_by):
        raise PermissionDenied("Only the person who uploaded this image or a department admin can withdraw it.")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why the image is withdrawn (it goes into the audit trail)."})
    if len(reason) > MAX_WITHDRAWAL_REASON:
        raise ValidationError(
            {"reason": f"Keep the reason under {MAX_WITHDRAWAL_REASON} characters (it has {len(reason)})."}
        )
    with transaction.atomic():
        # The same lock as uploads and signing: a withdrawal and a signature cannot cross.
        case = Case.objects.select_for_update().get(pk=image.case_id)
        _refuse_if_signed(case, doing="its images cannot be withdrawn")
        image = Image.objects.select_for_update().select_related("case__patient").get(pk=image.pk)
        if image.is_withdrawn:
            raise CaseConflict(f"Image {image.position} of case {case.pk} is withdrawn already.", code="withdrawn")
        image.withdrawn_at = timezone.now()
        image.withdrawn_by = withdrawn_by
        image.withdrawal_reason = reason
        image.save(update_fields=["withdrawn_at", "withdrawn_by", "withdrawal_reason"])
        # A job still waiting would classify a picture nobody sees; one already running finishes
        # and its result stays hidden with the image.
        InferenceJob.objects.filter(image=image, status=InferenceJob.Status.PENDING).update(
            status=InferenceJob.Status.FAILED,
            error_message="The image was withdrawn before it was classified.",
            finished_at=image.withdrawn_at,
        )
        image_withdrawn.send(sender=Image, image=image, user=withdrawn_by, reason=reason)
    return image


# Inference jobs --------------------------------------------------------------------------

# What a user reads when the disk is full; paths and errno stay in the server log.
DISK_FULL_MESSAGE = (
    "The server's disk is full, so the result could not be stored. An administrator must free space; "
    "a department admin can then re-run this job."
)
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class JobNotReleased(Exception):
    """A database error interrupted a batch and some of its jobs could not be given back.

    `held` lists their (job id, attempt) pairs: the task retries holding them, and the retry
    resumes exactly those attempts instead of leaving them "running" until the sweeper's window.
    """

    def __init__(self, held: list[tuple[int, int]]) -> None:
        super().__init__(f"jobs still running after a database error: {held}")
        self.held = held


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def this_worker(hostname: str = "") -> str:
    """The claimer recorded on a job: "<celery hostname> <pid>" (the host's name outside Celery)."""
    return f"{hostname or socket.gethostname()} {os.getpid()}"


def _split_worker(worker: str) -> tuple[str, int | None]:
    host, _, pid = worker.rpartition(" ")
    return (host, int(pid)) if pid.isdigit() else (worker, None)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claimer_dead(job: InferenceJob, *, worker: str) -> bool:
    """True when the job's claimer was a process of this same worker host that no longer exists:
    a pool child that crashed or was killed (its message comes back at once, through
    task_reject_on_worker_lost, while the job still says "running")."""
    host, pid = _split_worker(job.worker)
    my_host, my_pid = _split_worker(worker)
    return bool(job.worker) and host == my_host and pid is not None and pid != my_pid and not _pid_alive(pid)


def _gave_up_message(attempts: int) -> str:
    return (
        f"Gave up after {attempts} attempts; each was interrupted before it finished (the worker running it "
        "stopped or was restarted)."
    )


def _requeue_orphans(jobs: Iterable[InferenceJob]) -> tuple[list[int], int]:
    """Running jobs whose claimer is gone (inside a transaction, rows locked): back to pending, or
    failed when out of attempts. Returns (re-queued ids, failed count)."""
    requeue: list[int] = []
    failed = 0
    for job in jobs:
        if job.attempt >= settings.XNET_JOB_MAX_ATTEMPTS:
            _fail(job, _gave_up_message(job.attempt))
            failed += 1
            continue
        job.status = InferenceJob.Status.PENDING
        job.started_at = None
        job.queued_at = None
        job.worker = ""
        job.save(update_fields=["status", "started_at", "queued_at", "worker"])
        requeue.append(job.pk)
    return requeue, failed


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


def _start(job: InferenceJob, *, worker: str, now: datetime) -> None:
    _start_all([job], worker=worker, now=now)


def _start_all(jobs: list[InferenceJob], *, worker: str, now: datetime) -> None:
    """Mark locked pending jobs running, in one UPDATE (inside the caller's transaction).

    A queryset update sends no post_save: claiming changes nothing the reading order uses
    (signals.job_saved skips it for that reason too).
    """
    if not jobs:
        return
    InferenceJob.objects.filter(pk__in=[job.pk for job in jobs]).update(
        status=InferenceJob.Status.RUNNING,
        attempt=F("attempt") + 1,
        started_at=now,
        finished_at=None,
        error_message="",
        worker=worker,
    )
    for job in jobs:
        job.status = InferenceJob.Status.RUNNING
        job.attempt += 1
        job.started_at = now
        job.finished_at = None
        job.error_message = ""
        job.worker = worker


def _take(job_id: int, *, worker: str, held_attempt: int | None) -> tuple[InferenceJob | None, bool]:
    """Inside a transaction: the job locked (with its image, case and patient) and whether it must be
    started; (None, False) when there is nothing to do. See job_claim."""
    job = (
        InferenceJob.objects.select_for_update(of=("self",))
        .select_related("image__case__patient")
        .filter(pk=job_id)
        .first()
    )
    if job is None:
        return None, False
    if job.status == InferenceJob.Status.RUNNING and held_attempt is not None and job.attempt == held_attempt:
        if job.worker != worker:
            InferenceJob.objects.filter(pk=job.pk).update(worker=worker)
            job.worker = worker
        return job, False
    if job.status == InferenceJob.Status.RUNNING and _claimer_dead(job, worker=worker):
        logger.warning("Job %s: its claimer %s is gone; taking it over with its batch", job.pk, job.worker)
        orphans = InferenceJob.objects.select_for_update().filter(status=InferenceJob.Status.RUNNING, worker=job.worker)
        _requeue_orphans(orphans)
        job.refresh_from_db()
    if job.status != InferenceJob.Status.PENDING:
        return None, False
    if job.attempt >= settings.XNET_JOB_MAX_ATTEMPTS:
        _fail(job, _gave_up_message(job.attempt))
        return None, False
    return job, True


def job_claim(*, job_id: int, worker: str = "", held_attempt: int | None = None) -> InferenceJob | None:
    """Mark a pending job running and return it (image and case loaded); None when there is
    nothing to do.

    The row lock plus the status check make redelivery safe: a second delivery of the same
    message finds the job running or finished and returns. Two exceptions: a job still running
    `held_attempt` (this task's own attempt, kept through a database outage) is resumed, and a
    job whose claimer on this host has died is taken over at once, with its batch.
    """
    worker = worker or this_worker()
    with transaction.atomic():
        job, start = _take(job_id, worker=worker, held_attempt=held_attempt)
        if start:
            _start(job, worker=worker, now=timezone.now())
    return job


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


def job_release(*, job_id: int, attempt: int, refund: bool = False) -> None:
    """Give a claimed job back (before a retry), so the retried task can claim it again.

    `refund`: the attempt does not count, because the job was only interrupted by another job
    of its batch (a time limit), not by anything of its own.
    """
    with transaction.atomic():
        job = _locked_running(job_id, attempt)
        if job is not None:
            job.status = InferenceJob.Status.PENDING
            job.started_at = None
            job.worker = ""
            if refund:
                job.attempt -= 1
            job.save(update_fields=["status", "started_at", "worker", "attempt"])


def _release_retrying(job: InferenceJob) -> bool:
    """job_release through a short database outage: retried with backoff (about 15 s in all).

    Without it a job whose release failed stayed "running" until the sweeper's stale window.
    """
    delay = 0.5
    for _ in range(6):
        try:
            job_release(job_id=job.pk, attempt=job.attempt)
            return True
        except (OperationalError, InterfaceError):
            connection.close()  # the next try opens a fresh connection
            time.sleep(delay)
            delay *= 2
    logger.error("Job %s attempt %s could not be released; the task retry will resume it", job.pk, job.attempt)
    return False


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
    written: list[Prediction] = []
    try:
        with transaction.atomic(), reading_order_once():
            job = _locked_running(job_id, attempt)
            if job is None:
                return False
            spec = _Named(model_name, model_version)
            _prediction(job, spec, probabilities, heatmap_png, written).save()
            job.status = InferenceJob.Status.SUCCEEDED
            job.finished_at = timezone.now()
            job.gate_scores = gate_scores or {}
            job.save(update_fields=["status", "finished_at", "gate_scores"])
    except BaseException:
        for prediction in written:
            prediction.heatmap.delete(save=False)  # the row was rolled back: leave no orphan file
        raise
    return True


@dataclass(frozen=True)
class _Named:
    name: str
    version: str


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


def _pending_company(*, first: InferenceJob, limit: int) -> list[InferenceJob]:
    """Inside a transaction: up to `limit` other pending jobs of the same modality (any of its
    models: the batch is grouped by model later), oldest first, locked, with image, case and patient.

    skip_locked: jobs another worker is claiming right now are left to it. Their own queue
    messages arrive later, find them running or finished and return (claiming is idempotent).
    """
    if limit <= 0:
        return []
    return list(
        InferenceJob.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("image__case__patient")
        .filter(
            status=InferenceJob.Status.PENDING,
            image__modality=first.image.modality,
            attempt__lt=settings.XNET_JOB_MAX_ATTEMPTS,
        )
        .exclude(pk=first.pk)
        .order_by("created_at", "id")[:limit]
    )


def _claim_more(*, first: InferenceJob, limit: int, worker: str) -> list[InferenceJob]:
    """Claim up to `limit` other pending jobs of the same modality, in a transaction of its own."""
    if limit <= 0:
        return []
    with transaction.atomic():
        jobs = _pending_company(first=first, limit=limit)
        _start_all(jobs, worker=worker, now=timezone.now())
    return jobs


def job_claim_batch(*, job_id: int, worker: str = "", held: list[tuple[int, int]] = ()) -> list[InferenceJob]:
    """The task's job, claimed, plus other pending jobs of its modality for one worker batch.

    One transaction: the task's job locked and checked, the attempts a retried task still holds
    resumed, other pending jobs taken (skip_locked), all started by one UPDATE, rows read with
    their image and case. Predicting several images in one call is much cheaper per image than
    one call each. The batch is bounded in size (XNET_BATCH_MAX_SIZE) and in how long a lone job
    waits for company (XNET_BATCH_WAIT_MS; 0, the default, batches only what is already waiting).
    """
    worker = worker or this_worker()
    held_attempts = dict(held)
    now = timezone.now()
    with transaction.atomic():
        first, start = _take(job_id, worker=worker, held_attempt=held_attempts.get(job_id))
        if first is None:
            return []
        batch, to_start = [first], [first] if start else []
        for other_id, attempt in held:  # a retry after a database outage: its own attempts
            if other_id != job_id:
                job, start = _take(other_id, worker=worker, held_attempt=attempt)
                if job is not None and (start or job.attempt == attempt):
                    batch.append(job)
                    to_start += [job] if start else []
        more = _pending_company(first=first, limit=settings.XNET_BATCH_MAX_SIZE - len(batch))
        _start_all([*to_start, *more], worker=worker, now=now)
        batch += more
    if len(batch) < settings.XNET_BATCH_MAX_SIZE and settings.XNET_BATCH_WAIT_MS > 0:
        time.sleep(settings.XNET_BATCH_WAIT_MS / 1000)
        batch += _claim_more(first=first, limit=settings.XNET_BATCH_MAX_SIZE - len(batch), worker=worker)
    return batch


def job_run(*, job_id: int, worker: str = "", held: list[tuple[int, int]] = ()) -> None:
    """Claim a job (and a batch of others waiting), classify outside any transaction, store results.

    Every error of one image fails that image alone, with its reason (_run_batch). What is left
    here concerns the whole batch: a database outage gives every job back (retried, so none
    stays "running"; JobNotReleased names those that could not be), a time limit or a stop
    gives back the jobs the task's own job held up.
    """
    batch = job_claim_batch(job_id=job_id, worker=worker, held=held)
    if not batch:
        return
    others = batch[1:]
    try:
        _run_batch(batch)
    except (OperationalError, InterfaceError):
        stuck = [(job.pk, job.attempt) for job in batch if not _release_retrying(job)]
        for job in others:
            if (job.pk, job.attempt) not in stuck:
                _enqueue_quietly(job.pk)
        if stuck:
            raise JobNotReleased(stuck) from None
        raise
    except BaseException:
        # A time limit or a stop: the task records what happened to its own job; the others
        # go back to their queue without losing an attempt rather than wait for the sweeper.
        for job in others:
            job_release(job_id=job.pk, attempt=job.attempt, refund=True)
            _enqueue_quietly(job.pk)
        raise


def _enqueue_quietly(job_id: int) -> None:
    try:
        job_enqueue(job_id=job_id)
    except (OperationalError, InterfaceError):
        logger.warning("Job %s is pending but could not be queued now; the sweeper will", job_id)


def _reason(exc: BaseException) -> str:
    """What a user reads about an error: the cause in words, never a server path (that goes to
    the log with the traceback)."""
    if is_disk_full(exc):
        return DISK_FULL_MESSAGE
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
        return (
            "The stored image file could not be read on the server (missing or not readable); administrators "
            "can see the log."
        )
    return (
        "The image could not be decoded the way the model reads it: its pixel data or metadata (such as the EXIF "
        f"orientation) is malformed ({type(exc).__module__}.{type(exc).__name__}). Export it again as PNG or JPEG "
        "and upload the new file."
    ).replace("builtins.", "")


@dataclass
class _Outcome:
    """What became of one job of a batch, stored with the others in one transaction."""

    job: InferenceJob
    status: str
    spec: object | None = None
    message: str = ""  # FAILED: what the user reads
    code: str = ""  # REJECTED: the gate's code and reason
    reason: str = ""
    gate_scores: dict | None = None
    probabilities: dict[str, float] | None = None  # SUCCEEDED
    heatmap_png: bytes | None = None


def _failed(job: InferenceJob, exc: BaseException, message: str | None = None, spec: object = None) -> _Outcome:
    """One image's error: that job fails with the reason; the rest of the batch carries on.
    A database error is the whole batch's (job_run gives every job back)."""
    if isinstance(exc, OperationalError | InterfaceError):
        raise exc
    logger.error("Job %s (image %s) failed", job.pk, job.image_id, exc_info=exc)
    return _Outcome(job, InferenceJob.Status.FAILED, spec=spec, message=message or _reason(exc))


def _rejected(job: InferenceJob, spec: object, verdict) -> _Outcome:
    """The input gate refused the image for this model: the job ends rejected, with the reason."""
    return _Outcome(
        job,
        InferenceJob.Status.REJECTED,
        spec=spec,
        code=verdict.code,
        reason=verdict.reason,
        gate_scores=verdict.scores,
    )


def _fail_alone(job: InferenceJob, exc: BaseException, message: str | None = None) -> None:
    outcome = _failed(job, exc, message)
    job_fail(job_id=job.pk, attempt=job.attempt, message=outcome.message)


def _models_of(batch: list[InferenceJob], outcomes: list[_Outcome]) -> list[tuple[object, list[InferenceJob]]]:
    """The batch grouped by the model each job names (a blank name: the modality's newest
    installed model), so each model runs once over its images. Jobs whose model cannot run
    become failures in `outcomes`."""
    found: dict[tuple[str, str, str], object | str] = {}  # a spec, or why there is none
    groups: dict[tuple[str, str], tuple[object, list[InferenceJob]]] = {}
    for job in batch:
        modality = job.image.modality
        key = (modality, job.model_name, job.model_version)
        if key not in found:
            found[key] = _model_or_reason(modality, job.model_name, job.model_version)
        spec = found[key]
        if isinstance(spec, str):
            outcomes.append(_Outcome(job, InferenceJob.Status.FAILED, message=spec))
        else:
            groups.setdefault((spec.name, spec.version), (spec, []))[1].append(job)
    return list(groups.values())


_specs: dict[tuple, tuple[tuple, object | str]] = {}


def _models_stamp(model_dir: Path) -> tuple:
    """What changes when a model is installed, removed or edited: each model.json and folder's
    modification time (a few stat calls, against 24 ms a job for parsing the model cards)."""
    try:
        return tuple(
            (str(meta), meta.stat().st_mtime_ns, meta.parent.stat().st_mtime_ns)
            for meta in sorted(Path(model_dir).glob("*/model.json"))
        )
    except OSError:
        return (time.monotonic(),)  # a folder changing under us: read it again


def _installed(modality: str) -> list:
    """The installed models of a modality, cached like _model_or_reason."""
    model_dir = settings.XNET_MODEL_DIR
    key = (str(model_dir), modality, "*", "*")
    stamp = _models_stamp(model_dir)
    cached = _specs.get(key)
    if cached is None or cached[0] != stamp:
        specs = [spec for spec in installed_models(Path(model_dir)) if spec.modality == modality]
        cached = (stamp, specs)
        _specs[key] = cached
    return cached[1]


def _model_or_reason(modality: str, name: str, version: str) -> object | str:
    """The model a job names (a blank name: the modality's newest), or why it cannot run;
    cached per worker process until the model folder changes."""
    model_dir = settings.XNET_MODEL_DIR
    key = (str(model_dir), modality, name, version)
    stamp = _models_stamp(model_dir)
    cached = _specs.get(key)
    if cached is None or cached[0] != stamp:
        cached = (stamp, _find_model_or_reason(modality, name, version))
        _specs[key] = cached
    return cached[1]


def _find_model_or_reason(modality: str, name: str, version: str) -> object | str:
    try:
        spec = (
            find_model(settings.XNET_MODEL_DIR, name, version) if name else model_for(modality, settings.XNET_MODEL_DIR)
        )
    except ModelSpecError:
        logger.exception("The installed %s model cannot be used", modality)
        return (
            f"The installed {MODALITY_SHORT[modality]} model cannot be used (its files are invalid); "
            "administrators can see the log."
        )
    if spec is None:
        return (
            f"model {name} {version} is not installed" if name else f"no model installed for {MODALITY_SHORT[modality]}"
        )
    return spec


def _run_batch(batch: list[InferenceJob]) -> None:
    """Decode, gate and classify each model's images in one call per model, and store each
    model's outcomes in one transaction (_store_outcomes): with one model, one transaction for
    the batch; with several (issue 12's silent versions beside the assistive one, whose jobs come
    first), the first model's results are stored before the next model runs."""
    outcomes: list[_Outcome] = []
    groups = _models_of(batch, outcomes)
    if groups:
        from ml import gate, inference  # the model engine loads here, in the worker only

    for spec, jobs in groups:
        ready: list[tuple[InferenceJob, object, dict]] = []
        size = (spec.preprocessing.width, spec.preprocessing.height)
        for job in jobs:
            copy = _read_worker_copy(job.image)
            if copy is not None and size in copy.greys:
                verdict = gate.check_image(spec, None, dicom=job.image.dicom, measures=copy.measures)
                if verdict.accepted:
                    ready.append((job, inference.prepare_input(spec, copy.greys[size]), verdict.scores))
                else:
                    outcomes.append(_rejected(job, spec, verdict))
                continue
            try:
                handle = image_open(image=job.image)
            except Exception as exc:
                outcomes.append(_failed(job, exc, spec=spec))
                continue
            try:
                with handle, PILImage.open(handle) as picture:
                    picture.load()
                    verdict = gate.check_image(spec, picture, dicom=job.image.dicom)
                    if not verdict.accepted:
                        outcomes.append(_rejected(job, spec, verdict))
                        continue
                    ready.append((job, inference.prepare_input(spec, picture), verdict.scores))
            except inference.InferenceError as exc:
                outcomes.append(_failed(job, exc, f"The model could not process this image: {exc}", spec=spec))
            except Exception as exc:
                outcomes.append(_failed(job, exc, spec=spec))
        if ready:
            outcomes += _classify(spec, ready)
        _store_outcomes(outcomes)
        outcomes = []
    _store_outcomes(outcomes)  # jobs whose model cannot run, when no model of the batch can


def _read_worker_copy(image: Image) -> object | None:
    """The upload's worker copy (services._save_worker_copy), or None: none was stored (a DICOM,
    an upload from before, no model installed then) or it cannot be read; the worker then decodes
    the upload itself, as before."""
    if image.rendered or not image.file:
        return None
    try:
        with image.file.storage.open(worker_copy_name(image), "rb") as handle:
            return read_worker_copy(handle)
    except FileNotFoundError:
        return None
    except Exception:
        logger.warning("Worker copy of image %s unreadable; decoding the upload", image.pk, exc_info=True)
        return None


def _classify(spec: object, ready: list[tuple[InferenceJob, object, dict]]) -> list[_Outcome]:
    """One model call for the group. If it fails, each image is tried alone, so an image the
    model cannot take fails by itself instead of taking the others with it."""
    from ml import inference

    try:
        results = inference.analyse_inputs(spec, [array for _, array, _ in ready])
    except Exception as exc:
        if len(ready) > 1 and not isinstance(exc, OperationalError | InterfaceError):
            logger.warning("Batch of %s failed (%r); classifying each image alone", len(ready), exc)
            return [outcome for item in ready for outcome in _classify(spec, [item])]
        detail = str(exc) if isinstance(exc, inference.InferenceError) else type(exc).__name__
        return [_failed(ready[0][0], exc, f"The model could not process this image: {detail}", spec=spec)]
    return _judge_results(spec, ready, results)


def _judge_results(spec: object, ready: list[tuple[InferenceJob, object, dict]], results: list) -> list[_Outcome]:
    """The gate's distance check (on the features of the same forward pass) and the heatmap PNG."""
    from ml import gate, heatmaps

    calibration = gate.OodCalibration.load(spec)
    outcomes = []
    for (job, _, scores), result in zip(ready, results, strict=True):
        try:
            verdict = gate.check_features(calibration, result.features)
            scores = {**scores, **verdict.scores}
            if not verdict.accepted:
                outcomes.append(
                    _Outcome(
                        job,
                        InferenceJob.Status.REJECTED,
                        spec=spec,
                        code=verdict.code,
                        reason=verdict.reason,
                        gate_scores=scores,
                    )
                )
                continue
            outcomes.append(
                _Outcome(
                    job,
                    InferenceJob.Status.SUCCEEDED,
                    spec=spec,
                    gate_scores=scores,
                    probabilities=result.probabilities,
                    heatmap_png=heatmaps.heatmap_png(result.heatmap),
                )
            )
        except Exception as exc:
            outcomes.append(_failed(job, exc, spec=spec))
    return outcomes


def _store_outcomes(outcomes: list[_Outcome]) -> None:
    """Every outcome of the batch in one transaction, the reading order refreshed once per case.

    If that fails for a reason of one job (its heatmap file cannot be written, say), each outcome
    is stored alone, so that job fails by itself with the reason and the others keep their results.
    """
    if not outcomes:
        return
    try:
        _store_together(outcomes)
    except (OperationalError, InterfaceError):
        raise
    except Exception as exc:
        logger.warning("Storing a batch of %s failed (%r); storing each job alone", len(outcomes), exc)
        for outcome in outcomes:
            _store_alone(outcome)


def _store_together(outcomes: list[_Outcome]) -> None:
    written: list[Prediction] = []
    try:
        with transaction.atomic(), reading_order_once():
            ids = [outcome.job.pk for outcome in outcomes]
            current = {
                pk: (status, attempt)
                for pk, status, attempt in InferenceJob.objects.select_for_update()
                .filter(pk__in=ids)
                .order_by("pk")
                .values_list("pk", "status", "attempt")
            }
            now = timezone.now()
            for outcome in outcomes:
                job = outcome.job
                if current.get(job.pk) != (InferenceJob.Status.RUNNING, job.attempt):
                    logger.warning("Job %s attempt %s is no longer current; result discarded", job.pk, job.attempt)
                    continue
                fields = ["status", "finished_at"]
                if outcome.spec is not None:
                    job.model_name, job.model_version = outcome.spec.name, outcome.spec.version
                    fields += ["model_name", "model_version"]
                job.status = outcome.status
                job.finished_at = now
                if outcome.status == InferenceJob.Status.FAILED:
                    job.error_message = outcome.message
                    fields.append("error_message")
                elif outcome.status == InferenceJob.Status.REJECTED:
                    job.rejection_code = InferenceJob.Rejection(outcome.code)
                    job.rejection_reason = outcome.reason
                    job.gate_scores = outcome.gate_scores or {}
                    fields += ["rejection_code", "rejection_reason", "gate_scores"]
                else:
                    prediction = _prediction(job, outcome.spec, outcome.probabilities, outcome.heatmap_png, written)
                    prediction.save()
                    job.gate_scores = outcome.gate_scores or {}
                    fields.append("gate_scores")
                job.save(update_fields=fields)
    except BaseException:
        for prediction in written:
            prediction.heatmap.delete(save=False)  # the rows were rolled back: leave no orphan file
        raise


def _prediction(
    job: InferenceJob, spec: object, probabilities: dict, heatmap_png: bytes | None, written: list
) -> Prediction:
    top_label, top_probability = max(probabilities.items(), key=lambda item: item[1])
    prediction = Prediction(
        job=job,
        probabilities=probabilities,
        top_label=top_label,
        top_probability=top_probability,
        model_name=spec.name,
        model_version=spec.version,
    )
    if heatmap_png:
        # A random name: the file is private and served by a department-checked view.
        prediction.heatmap.save(f"{uuid.uuid4().hex}.png", ContentFile(heatmap_png), save=False)
        written.append(prediction)
    return prediction


def _store_alone(outcome: _Outcome) -> None:
    """One outcome in its own transaction (after the batch's transaction failed)."""
    job = outcome.job
    try:
        if outcome.spec is not None and job.model_name != outcome.spec.name:
            InferenceJob.objects.filter(pk=job.pk, status=InferenceJob.Status.RUNNING).update(
                model_name=outcome.spec.name, model_version=outcome.spec.version
            )
        if outcome.status == InferenceJob.Status.FAILED:
            job_fail(job_id=job.pk, attempt=job.attempt, message=outcome.message)
        elif outcome.status == InferenceJob.Status.REJECTED:
            job_reject(
                job_id=job.pk,
                attempt=job.attempt,
                code=outcome.code,
                reason=outcome.reason,
                gate_scores=outcome.gate_scores or {},
            )
        else:
            job_succeed(
                job_id=job.pk,
                attempt=job.attempt,
                model_name=outcome.spec.name,
                model_version=outcome.spec.version,
                probabilities=outcome.probabilities,
                heatmap_png=outcome.heatmap_png,
                gate_scores=outcome.gate_scores,
            )
    except Exception as exc:
        message = (
            None
            if is_disk_full(exc)
            else f"The result could not be stored ({type(exc).__name__}); administrators can see the log."
        )
        _fail_alone(job, exc, message)


def job_abort(*, job_id: int, message: str) -> None:
    """Fail whatever attempt is running (the task hit its time limit or an unexpected error)."""
    job = InferenceJob.objects.filter(pk=job_id).first()
    if job is not None:
        job_fail(job_id=job_id, attempt=job.attempt, message=message)


def job_retry(*, job_id: int, user: User) -> InferenceJob:
    """Classify a failed job's image again, as a new job (the failed one stays in the history).

    For department admins of the image's department, and only while the case is unsigned: a
    signed report's results are frozen. A disk that was full, a model that was missing, a worker
    that gave up: once the cause is fixed, the image need not be uploaded again.
    """
    if not user.is_department_admin:
        raise PermissionDenied("Only department admins can re-run jobs.")
    with transaction.atomic():
        job = selectors.job_list_for_user(user=user).select_for_update(of=("self",)).filter(pk=job_id).first()
        if job is None:
            raise InferenceJob.DoesNotExist(f"No job {job_id} in your department.")
        if job.status != InferenceJob.Status.FAILED:
            raise ValidationError(
                f"Only failed jobs can be re-run; this one is {job.get_status_display().lower()}.", code="not_failed"
            )
        # Each model's jobs of the image are a line of their own (issue 12: one job per active model).
        same_model = job.image.jobs.filter(model_name=job.model_name, model_version=job.model_version)
        if (
            same_model.filter(created_at__gt=job.created_at).exists()
            or same_model.filter(created_at=job.created_at, pk__gt=job.pk).exists()
        ):
            raise ValidationError(
                "This image has a newer job already; re-run that one if it failed.", code="not_latest"
            )
        if Case.objects.filter(pk=job.image.case_id, report__isnull=False).exists():
            raise ValidationError(
                "The case is signed; its results are frozen and cannot be re-run.", code="case_signed"
            )
        retry = InferenceJob.objects.create(image=job.image, model_name=job.model_name, model_version=job.model_version)
        job_retried.send(sender=InferenceJob, job=job, retry=retry, user=user)
        transaction.on_commit(lambda pk=retry.pk: job_enqueue(job_id=pk), robust=True)
    logger.info("Job %s re-run as job %s by %s", job.pk, retry.pk, user.get_username())
    return retry


@dataclass(frozen=True)
class SweepReport:
    requeued: int
    failed: int


def jobs_sweep(*, now: datetime | None = None, hostname: str = "", booted_at: datetime | None = None) -> SweepReport:
    """Re-queue jobs a lost message or a dead worker left behind, so no case is stranded.

    A running job is orphaned when its worker's heartbeat stopped (XNET_WORKER_LOST_AFTER), when
    `hostname` is the sweeping worker's own and the job was claimed by an earlier start of it or
    by a pool child that no longer exists, and in any case past XNET_JOB_STALE_AFTER (the hard
    time limit would have ended a live one). It goes back to pending, or fails after too many
    attempts. Pending jobs never published (broker down at upload) or published a while ago
    (XNET_JOB_REQUEUE_PENDING_AFTER: the message may be lost) are queued again; a duplicate
    message is harmless because claiming is idempotent.
    """
    from health.selectors import lost_worker_names

    now = now or timezone.now()
    Status = InferenceJob.Status
    orphaned = Q(started_at__lt=now - timedelta(seconds=settings.XNET_JOB_STALE_AFTER))
    lost_after = now - timedelta(seconds=settings.XNET_WORKER_LOST_AFTER)
    for name in lost_worker_names(now=now):
        orphaned |= Q(worker__startswith=f"{name} ", started_at__lt=lost_after)
    with transaction.atomic():
        running = InferenceJob.objects.select_for_update(skip_locked=True).filter(status=Status.RUNNING)
        stale = list(running.filter(orphaned))
        if hostname:
            mine = running.filter(worker__startswith=f"{hostname} ").exclude(pk__in=[job.pk for job in stale])
            for job in mine:
                _, pid = _split_worker(job.worker)
                claimed_before_boot = (
                    booted_at is not None and job.started_at is not None and job.started_at < booted_at
                )
                if claimed_before_boot or (pid is not None and pid != os.getpid() and not _pid_alive(pid)):
                    stale.append(job)
        requeue, failed = _requeue_orphans(stale)
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
