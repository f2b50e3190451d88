"""Logins, logouts and failed logins, from Django's auth signals (pages, the Django admin and
anything else that calls django.contrib.auth.login/authenticate); patients and cases created,
from their rows being saved (pages, API, DICOM intake, the Django admin and the shell alike)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_save
from django.dispatch import receiver

from audit.models import AuditEvent
from audit.services import audit_record, current_request
from diagnosis.models import Case, Patient
from diagnosis.signals import image_withdrawn, job_retried, model_status_changed


@receiver(user_logged_in, dispatch_uid="audit_login")
def _logged_in(sender, request, user, **kwargs) -> None:
    audit_record(action=AuditEvent.Action.LOGIN, actor=user, object_type="user", object_id=user.pk, request=request)


@receiver(user_logged_out, dispatch_uid="audit_logout")
def _logged_out(sender, request, user, **kwargs) -> None:
    if user is None:  # logging out without a session
        return
    audit_record(action=AuditEvent.Action.LOGOUT, actor=user, object_type="user", object_id=user.pk, request=request)


@receiver(user_login_failed, dispatch_uid="audit_login_failed")
def _login_failed(sender, credentials, request=None, **kwargs) -> None:
    """Record the username as typed; when it names an account, file the event under that
    account's department, so its admin sees attempts on their users (guessing included)."""
    typed = str(credentials.get("username", "") or "")
    known = get_user_model().objects.filter(username=typed).values("pk", "department_id").first() if typed else None
    audit_record(
        action=AuditEvent.Action.LOGIN_FAILED,
        actor_username=typed,
        department_id=known["department_id"] if known else None,
        object_type="user" if known else "",
        object_id=known["pk"] if known else "",
        detail={"known_user": known is not None},
        request=request,
    )


def _creator(instance: Patient | Case):
    """Whoever is signed in on the request being served, else the row's creator (a command)."""
    request = current_request.get()
    user = getattr(request, "user", None) if request is not None else None
    return user if user is not None and user.is_authenticated else instance.created_by


@receiver(post_save, sender=Patient, dispatch_uid="audit_patient_create")
def _patient_created(sender, instance: Patient, created: bool, raw: bool = False, **kwargs) -> None:
    """In the creating transaction: a patient whose case then fails to save leaves no event."""
    if not created or raw:
        return
    audit_record(
        action=AuditEvent.Action.PATIENT_CREATE,
        actor=_creator(instance),
        department_id=instance.department_id,
        object_type="patient",
        object_id=instance.pk,
    )


@receiver(post_save, sender=Case, dispatch_uid="audit_case_create")
def _case_created(sender, instance: Case, created: bool, raw: bool = False, **kwargs) -> None:
    if not created or raw:
        return
    audit_record(
        action=AuditEvent.Action.CASE_CREATE,
        actor=_creator(instance),
        department_id=instance.patient.department_id,
        object_type="case",
        object_id=instance.pk,
        detail={"patient": instance.patient_id},
    )


@receiver(image_withdrawn, dispatch_uid="audit_image_withdrawn")
def _image_withdrawn(sender, image, user, reason: str, **kwargs) -> None:
    """A withdrawn upload, with its reason, in the withdrawing transaction (the image row keeps
    the reason too; the event is what the department's audit log shows)."""
    audit_record(
        action=AuditEvent.Action.IMAGE_WITHDRAW,
        actor=user,
        department_id=image.case.patient.department_id,
        object_type="image",
        object_id=image.pk,
        detail={"case": image.case_id, "position": image.position, "reason": reason},
    )


@receiver(job_retried, dispatch_uid="audit_job_retried")
def _job_retried(sender, job, retry, user, **kwargs) -> None:
    """A department admin re-ran a failed job (after a full disk, a missing model...): who, which
    image, and the failed job's reason, in the re-running transaction."""
    audit_record(
        action=AuditEvent.Action.JOB_RETRY,
        actor=user,
        department_id=job.image.case.patient.department_id,
        object_type="job",
        object_id=retry.pk,
        detail={"failed_job": job.pk, "image": job.image_id, "case": job.image.case_id, "reason": job.error_message},
    )


@receiver(model_status_changed, dispatch_uid="audit_model_status_changed")
def _model_status_changed(sender, deployment, change, user, **kwargs) -> None:
    """A model version's status in a department changed (or its row was created at install):
    who (None for a sync), from what to what, and why, in the changing transaction."""
    audit_record(
        action=AuditEvent.Action.MODEL_STATUS_CHANGE,
        actor=user,
        department_id=deployment.department_id,
        object_type="model_deployment",
        object_id=deployment.pk,
        detail={
            "model": f"{deployment.model_name} {deployment.model_version}",
            "modality": deployment.modality,
            "from": change.from_status,
            "to": change.to_status,
            "reason": change.reason,
            "override": change.override,
        },
    )
