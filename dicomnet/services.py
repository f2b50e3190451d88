"""Writes: nodes, instances arriving over DICOM (C-STORE or STOW-RS), and deliveries going out.

An arriving instance goes through the same checks and the same diagnosis services as a DICOM
upload (diagnosis.services.case_from_dicom / images_upload): whatever the upload refuses is
refused here, with the same reason. One study (StudyInstanceUID) of a department is one case.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from datetime import timedelta

import pydicom
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from pydicom.uid import generate_uid

from accounts.models import Department, User
from audit.models import AuditEvent
from audit.services import audit_record
from diagnosis import services as diagnosis_services
from diagnosis.models import Case, Image, InferenceJob, Prediction
from dicomnet.models import Delivery, DicomNode, IntakeEvent, ReceivedInstance, StudyLink

logger = logging.getLogger(__name__)

# DIMSE C-STORE statuses (PS3.4 B.2.3): A700 out of resources, A900 data set does not match the
# SOP class, C000 cannot understand (what XNET refuses: not a chest, wrong modality, no pixels...).
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_PROCESSING_FAILURE = 0x0110


# Nodes -------------------------------------------------------------------------------------


def _require_admin(user: User) -> None:
    if not user.is_department_admin:
        raise PermissionDenied("Only department admins manage DICOM nodes.")


def node_save(*, node: DicomNode, changed_by: User) -> DicomNode:
    """Create or change a node of the admin's own department."""
    _require_admin(changed_by)
    if node.pk is not None and node.department_id != changed_by.department_id:
        raise PermissionDenied("Unknown node.")
    node.department_id = changed_by.department_id
    node.ae_title = (node.ae_title or "").strip()
    node.full_clean()
    change = "dicom_node_change" if node.pk is not None else "dicom_node_add"
    with transaction.atomic():
        node.save()
        _audit_node(changed_by, node, change)
    return node


def node_delete(*, node: DicomNode, changed_by: User) -> None:
    """Deleting a node that has deliveries only disables it: their history stays readable."""
    _require_admin(changed_by)
    if node.department_id != changed_by.department_id:
        raise PermissionDenied("Unknown node.")
    with transaction.atomic():
        _audit_node(changed_by, node, "dicom_node_remove")
        if node.deliveries.exists():
            node.enabled = False
            node.save(update_fields=["enabled"])
        else:
            node.delete()


def _audit_node(user: User, node: DicomNode, change: str) -> None:
    audit_record(
        action=AuditEvent.Action.INTEGRATION_CHANGE,
        actor=user,
        department_id=node.department_id,
        object_type="dicom_node",
        object_id=node.pk,
        detail={
            "change": change,
            "ae_title": node.ae_title,
            "host": node.host,
            "port": node.port,
            "direction": node.direction,
        },
    )


def incoming_node(ae_title: str) -> DicomNode | None:
    """The enabled incoming node with this calling AE title: it decides the owning department."""
    return (
        DicomNode.objects.select_related("department")
        .filter(ae_title=ae_title.strip(), direction__in=DicomNode.INCOMING_DIRECTIONS, enabled=True)
        .first()
    )


# Intake ------------------------------------------------------------------------------------


def intake_user(department: Department) -> User:
    """The account images received over the network are filed under: one per department, a
    service account (accounts.backends: it never signs in, holds no token, no admin manages it);
    pages show it as the uploader. Active, because the diagnosis services look patients up
    through the uploader's department like any upload."""
    user_model = get_user_model()
    username = f"dicom-intake-{department.pk}"
    user = user_model.objects.filter(username=username).first()
    if user is None:
        user = user_model(
            username=username,
            first_name="DICOM",
            last_name="intake",
            department=department,
            role=user_model.Role.RADIOLOGIST,
            is_service_account=True,
        )
        user.set_unusable_password()
        try:
            with transaction.atomic():
                user.save()
        except IntegrityError:
            user = user_model.objects.get(username=username)
    return user


@dataclass(frozen=True)
class IntakeResult:
    status: int  # the DIMSE status to answer
    outcome: str  # IntakeEvent.Outcome
    code: str = ""
    reason: str = ""
    case_id: int | None = None
    image_id: int | None = None
    sop_instance_uid: str = ""
    sop_class_uid: str = ""
    study_instance_uid: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome != IntakeEvent.Outcome.REFUSED


def _uid(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return str(value).strip()[:64] if value else ""


def _message(exc: ValidationError) -> tuple[str, str]:
    messages = exc.messages
    text = " ".join(messages)
    code = getattr(exc, "code", None) or ""
    if not code and hasattr(exc, "error_dict"):
        codes = [e.code for errors in exc.error_dict.values() for e in errors if e.code]
        code = codes[0] if codes else ""
    if not code and hasattr(exc, "error_list"):
        codes = [e.code for e in exc.error_list if e.code]
        code = codes[0] if codes else ""
    return code or "refused", text


def instance_receive(
    *,
    department: Department,
    node: DicomNode | None,
    data: bytes,
    source: str,
    calling_ae: str = "",
    study_uid: str | None = None,
) -> IntakeResult:
    """Store one DICOM instance (Part 10 bytes) for `department`, sent by `node` (None: over
    STOW-RS by a user): all or nothing, the job queued on commit. Returns what to answer; a
    refusal is logged and kept as an IntakeEvent. `study_uid`: the study the sender named
    (STOW-RS /studies/{uid}); an instance of another study is refused."""
    expected_study = study_uid
    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    except Exception:
        header = pydicom.Dataset()
    sop_uid, study_uid = _uid(header, "SOPInstanceUID"), _uid(header, "StudyInstanceUID")
    sop_class = _uid(header, "SOPClassUID")

    def result(status: int, outcome: str, code: str = "", reason: str = "", case_id=None, image_id=None):
        IntakeEvent.objects.create(
            department=department,
            node=node,
            source=source,
            calling_ae=calling_ae[:16],
            outcome=outcome,
            code=code[:64],
            reason=reason,
            sop_instance_uid=sop_uid,
            study_instance_uid=study_uid,
            case_id=case_id,
        )
        if outcome == IntakeEvent.Outcome.REFUSED:
            logger.warning(
                "DICOM %s from %s (%s) refused, SOP instance %s: [%s] %s",
                source,
                calling_ae or (node.ae_title if node else ""),
                department,
                sop_uid or "?",
                code,
                reason,
            )
        return IntakeResult(
            status=status,
            outcome=outcome,
            code=code,
            reason=reason,
            case_id=case_id,
            image_id=image_id,
            sop_instance_uid=sop_uid,
            sop_class_uid=sop_class,
            study_instance_uid=study_uid,
        )

    if not sop_uid or not study_uid:
        return result(
            STATUS_CANNOT_UNDERSTAND,
            IntakeEvent.Outcome.REFUSED,
            "dicom_no_uids",
            "The DICOM object has no SOPInstanceUID or StudyInstanceUID; it cannot be filed.",
        )
    if expected_study and expected_study != study_uid:
        return result(
            0xA900,
            IntakeEvent.Outcome.REFUSED,
            "study_mismatch",
            f"This instance belongs to study {study_uid}, not to study {expected_study} named in the request.",
        )
    existing = ReceivedInstance.objects.filter(department=department, sop_instance_uid=sop_uid).first()
    if existing is not None:
        return result(
            STATUS_SUCCESS, IntakeEvent.Outcome.DUPLICATE, case_id=existing.study.case_id, image_id=existing.image_id
        )
    upload = SimpleUploadedFile(f"{sop_uid}.dcm", data, content_type="application/dicom")
    user = intake_user(department)
    try:
        with transaction.atomic():
            image = _store(
                department=department,
                node=node,
                user=user,
                upload=upload,
                sop_uid=sop_uid,
                study_uid=study_uid,
                source=source,
            )
    except ValidationError as exc:
        code, reason = _message(exc)
        # The upload service prefixes the file name; here that is the SOP instance UID: drop it.
        reason = reason.removeprefix(f"{sop_uid}.dcm: ")
        return result(STATUS_CANNOT_UNDERSTAND, IntakeEvent.Outcome.REFUSED, code, reason)
    except diagnosis_services.CaseConflict as exc:
        return result(STATUS_PROCESSING_FAILURE, IntakeEvent.Outcome.REFUSED, exc.code, exc.message)
    except _Duplicate as dup:
        return result(STATUS_SUCCESS, IntakeEvent.Outcome.DUPLICATE, case_id=dup.case_id, image_id=dup.image_id)
    except OSError as exc:
        if diagnosis_services.is_disk_full(exc):
            return result(
                STATUS_OUT_OF_RESOURCES, IntakeEvent.Outcome.REFUSED, "disk_full", diagnosis_services.DISK_FULL_MESSAGE
            )
        raise
    return result(STATUS_SUCCESS, IntakeEvent.Outcome.STORED, case_id=image.case_id, image_id=image.pk)


class _Duplicate(Exception):
    def __init__(self, case_id: int, image_id: int) -> None:
        super().__init__("duplicate")
        self.case_id, self.image_id = case_id, image_id


def _store(
    *, department: Department, node: DicomNode | None, user: User, upload, sop_uid: str, study_uid: str, source: str
) -> Image:
    """Inside a transaction: the study's case (created with the patient from the header on its
    first instance), the image and its job, and the ReceivedInstance row, or nothing."""
    link = StudyLink.objects.filter(department=department, study_instance_uid=study_uid).first()
    if link is None:
        # Two instances of a new study arriving at once: the department row lock lets one create
        # the case; the other then finds its link.
        Department.objects.select_for_update().filter(pk=department.pk).first()
        link = StudyLink.objects.filter(department=department, study_instance_uid=study_uid).first()
    if link is None:
        jobs = diagnosis_services.case_from_dicom(created_by=user, files=[upload])
        image = jobs[0].image
        link = StudyLink.objects.create(department=department, study_instance_uid=study_uid, case=image.case)
    else:
        Case.objects.select_for_update().filter(pk=link.case_id).first()
        earlier = ReceivedInstance.objects.filter(department=department, sop_instance_uid=sop_uid).first()
        if earlier is not None:
            raise _Duplicate(link.case_id, earlier.image_id)
        jobs = diagnosis_services.images_upload(case=link.case, files=[upload], uploaded_by=user)
        image = jobs[0].image
    try:
        with transaction.atomic():
            ReceivedInstance.objects.create(
                department=department, sop_instance_uid=sop_uid, study=link, image=image, node=node, source=source
            )
    except IntegrityError:
        # The same instance stored a moment ago by another association: this copy is dropped
        # (the outer transaction rolls back its image and job; its files go here).
        image.file.delete(save=False)
        image.rendered.delete(save=False)
        earlier = ReceivedInstance.objects.get(department=department, sop_instance_uid=sop_uid)
        raise _Duplicate(earlier.study.case_id, earlier.image_id) from None
    return image


# Deliveries --------------------------------------------------------------------------------


def destination_nodes() -> QuerySet[DicomNode]:
    """The nodes results are sent to: enabled, and marked destination (or both)."""
    return DicomNode.objects.filter(direction__in=DicomNode.DESTINATION_DIRECTIONS, enabled=True)


def _destinations(department_id: int) -> QuerySet[DicomNode]:
    return destination_nodes().filter(department_id=department_id)


def _source_dicom_image(image: Image) -> bool:
    return image.format == Image.Format.DICOM and bool((image.dicom or {}).get("study_instance_uid"))


def _is_assistive(*, department_id: int, model_name: str, model_version: str) -> bool:
    """Results go out only from models the department uses for care (assistive), once the model
    status exists (diagnosis.model_status); before it, every result counts."""
    try:
        from diagnosis import model_status
    except ImportError:
        return True
    check = getattr(model_status, "is_assistive", None)
    if check is None:
        return True
    return bool(check(department_id=department_id, model_name=model_name, model_version=model_version))


def _create(node: DicomNode, case: Case, kind: str, series_uid: str, **source) -> Delivery | None:
    try:
        with transaction.atomic():
            return Delivery.objects.create(
                node=node,
                case=case,
                kind=kind,
                series_instance_uid=series_uid,
                sop_instance_uid=generate_uid(),
                **source,
            )
    except IntegrityError:
        return None  # announced before: idempotent


def deliveries_for_prediction(*, prediction_id: int) -> list[Delivery]:
    """An SR and a secondary capture of this result for each destination of the department."""
    prediction = Prediction.objects.select_related("job__image__case__patient").filter(pk=prediction_id).first()
    if prediction is None or prediction.job.status != InferenceJob.Status.SUCCEEDED:
        return []
    image = prediction.job.image
    case = image.case
    department_id = case.patient.department_id
    if not _source_dicom_image(image) or not _is_assistive(
        department_id=department_id, model_name=prediction.model_name, model_version=prediction.model_version
    ):
        return []
    created = []
    for node in _destinations(department_id):
        series_uid = generate_uid()  # the SR and the capture of one result: one XNET series each
        for kind in (Delivery.Kind.SR, Delivery.Kind.SC):
            delivery = _create(
                node, case, kind, series_uid if kind == Delivery.Kind.SR else generate_uid(), prediction=prediction
            )
            if delivery is not None:
                created.append(delivery)
    for delivery in created:
        transaction.on_commit(lambda pk=delivery.pk: delivery_enqueue(delivery_id=pk), robust=True)
    return created


def deliveries_for_report(*, report_id: int) -> list[Delivery]:
    """The signed report's PDF, encapsulated, for each destination, when the case came as DICOM."""
    from reviews.models import Report

    report = Report.objects.select_related("case__patient").filter(pk=report_id).first()
    if report is None:
        return []
    case = report.case
    if not any(_source_dicom_image(image) for image in case.images.current()):
        return []
    created = []
    for node in _destinations(case.patient.department_id):
        delivery = _create(node, case, Delivery.Kind.PDF, generate_uid(), report=report)
        if delivery is not None:
            created.append(delivery)
    for delivery in created:
        transaction.on_commit(lambda pk=delivery.pk: delivery_enqueue(delivery_id=pk), robust=True)
    return created


def delivery_enqueue(*, delivery_id: int, countdown: float = 0) -> bool:
    from dicomnet.tasks import deliver

    try:
        deliver.apply_async(args=[delivery_id], queue="dicom", countdown=countdown or None)
    except Exception:
        logger.exception("Could not queue DICOM delivery %s; the sweeper will retry", delivery_id)
        return False
    return True


def retry_delay(attempts: int) -> int:
    """Exponential backoff: XNET_DICOM_RETRY_SECONDS, doubled per failed attempt, capped."""
    return min(settings.XNET_DICOM_RETRY_SECONDS * 2 ** max(attempts - 1, 0), settings.XNET_DICOM_RETRY_MAX_SECONDS)


def delivery_claim(*, delivery_id: int) -> Delivery | None:
    """Mark a delivery as being sent; None when there is nothing to do (sent, failed, or being
    sent by a live claim: a duplicate message)."""
    stale = timezone.now() - timedelta(seconds=settings.XNET_DICOM_TIMEOUT * 4)
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().filter(pk=delivery_id).first()
        if delivery is None or delivery.status in (Delivery.Status.SENT, Delivery.Status.FAILED):
            return None
        if delivery.status == Delivery.Status.SENDING and delivery.claimed_at and delivery.claimed_at > stale:
            return None
        delivery.status = Delivery.Status.SENDING
        delivery.attempts += 1
        delivery.claimed_at = timezone.now()
        delivery.save(update_fields=["status", "attempts", "claimed_at"])
    return delivery


def delivery_succeeded(*, delivery: Delivery) -> None:
    Delivery.objects.filter(pk=delivery.pk).update(
        status=Delivery.Status.SENT, sent_at=timezone.now(), last_error="", next_attempt_at=None
    )


def delivery_failed(*, delivery: Delivery, error: str, permanent: bool = False) -> int | None:
    """Record a failed attempt; the seconds to wait before the next one, None when giving up."""
    give_up = permanent or delivery.attempts >= settings.XNET_DICOM_DELIVERY_ATTEMPTS
    delay = None if give_up else retry_delay(delivery.attempts)
    Delivery.objects.filter(pk=delivery.pk).update(
        status=Delivery.Status.FAILED if give_up else Delivery.Status.RETRYING,
        last_error=error[:2000],
        next_attempt_at=None if give_up else timezone.now() + timedelta(seconds=delay),
    )
    return delay


def delivery_resend(*, delivery: Delivery, user: User) -> Delivery:
    """A department admin sends a delivery again (failed, or sent and lost by the PACS): the same
    object, the same UIDs, a fresh count of attempts."""
    if not user.is_department_admin or delivery.case.patient.department_id != user.department_id:
        raise PermissionDenied("Only department admins of the case's department can resend.")
    with transaction.atomic():
        locked = Delivery.objects.select_for_update().get(pk=delivery.pk)
        if locked.status in (Delivery.Status.SENDING, Delivery.Status.PENDING, Delivery.Status.RETRYING):
            raise ValidationError("This delivery is on its way already.", code="delivery_in_progress")
        locked.status = Delivery.Status.PENDING
        locked.attempts = 0
        locked.last_error = ""
        locked.resent_by = user
        locked.claimed_at = timezone.now()  # the sweeper counts its grace from the resend
        locked.save(update_fields=["status", "attempts", "last_error", "resent_by", "claimed_at"])
        audit_record(
            action=AuditEvent.Action.INTEGRATION_CHANGE,
            actor=user,
            department_id=user.department_id,
            object_type="dicom_delivery",
            object_id=locked.pk,
            detail={"change": "dicom_delivery_resend", "kind": locked.kind, "case": locked.case_id},
        )
        transaction.on_commit(lambda pk=locked.pk: delivery_enqueue(delivery_id=pk), robust=True)
    return locked


def deliveries_lost(*, grace: int = 60) -> list[int]:
    """Deliveries whose message is lost: never sent off (broker down when the result came), a
    retry overdue by `grace` seconds, or an attempt whose worker died mid-send (claimed longer ago
    than four timeouts)."""
    now = timezone.now()
    due = now - timedelta(seconds=grace)
    stale = now - timedelta(seconds=settings.XNET_DICOM_TIMEOUT * 4)
    return list(
        Delivery.objects.filter(
            Q(status=Delivery.Status.PENDING, created_at__lt=due, claimed_at__isnull=True)
            | Q(status=Delivery.Status.PENDING, claimed_at__lt=due)
            | Q(status=Delivery.Status.RETRYING, next_attempt_at__lt=due)
            | Q(status=Delivery.Status.SENDING, claimed_at__lt=stale)
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def deliveries_requeue(*, grace: int = 60) -> int:
    """Publish the lost deliveries again; a duplicate message costs one refused claim."""
    return sum(delivery_enqueue(delivery_id=pk) for pk in deliveries_lost(grace=grace))


def listener_address() -> str:
    return f"{settings.XNET_DICOM_AE_TITLE}@{settings.XNET_DICOM_HOST}:{settings.XNET_DICOM_PORT}"
