"""Writes for sign-off: sign a case's report once, then add addenda. Nothing is ever overwritten.

Refusals: a ValidationError (400) for bad input, ReviewConflict (409) when the case's state does
not allow the action (signed already, not signed yet), Case.DoesNotExist (404) for another
department's case. Each leaves nothing written.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Prefetch

from accounts.models import User
from diagnosis.models import Case, Image, InferenceJob
from ml.labels import display_name
from reviews import selectors
from reviews.models import Addendum, Report
from reviews.signals import report_signed

MAX_TEXT_LENGTH = 10_000
NOT_SIGNED_MESSAGE = "This case has no signed report yet: an addendum amends a signed report. Sign the case first."
NOT_SIGNED_PDF_MESSAGE = "This case has no signed report yet: the PDF report exists once the case is signed."


class ReviewConflict(Exception):
    """The case's state forbids the action: it is signed already, or not signed yet."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _check_department(*, case: Case, user: User) -> None:
    """Any active member of the case's department signs: radiologists and department admins
    (who read studies too). Site admins without a department sign nothing. Views find the case
    through a department-scoped selector first; this guards other callers the same way (404)."""
    if not user.is_active or user.department_id is None or user.department_id != case.patient.department_id:
        raise Case.DoesNotExist("No such case.")


def _text(value: str, *, field: str, missing: str, errors: dict[str, str]) -> str:
    value = (value or "").strip()
    if not value:
        errors[field] = missing
    elif len(value) > MAX_TEXT_LENGTH:
        errors[field] = f"Keep it under {MAX_TEXT_LENGTH} characters (it has {len(value)})."
    return value


def _case_with_results(case_id: int) -> Case:
    jobs = InferenceJob.objects.select_related("prediction").order_by("created_at", "id")
    images = Image.objects.current().prefetch_related(Prefetch("jobs", queryset=jobs)).order_by("uploaded_at", "id")
    return Case.objects.select_related("patient").prefetch_related(Prefetch("images", queryset=images)).get(pk=case_id)


def report_sign(
    *,
    case: Case,
    signed_by: User,
    agrees_with_ai: bool,
    impression: str,
    final_label: str = "",
    other_finding: str = "",
    shown_ai_job_id: int | None = None,
) -> Report:
    """Sign the case's report: agree with the leading AI finding or override it with a class
    label or 'other' (described in other_finding). The AI result shown is copied into the report.

    shown_ai_job_id: the job of the leading finding the signer saw (0: none was shown). When it
    is given and the leading finding is another one now (a job finished or re-ran meanwhile),
    signing is refused, so the report never records an AI result its signer did not see.
    """
    _check_department(case=case, user=signed_by)
    with transaction.atomic():
        # Lock the case row: two people signing at once queue here and the second one finds
        # the first one's report instead of a unique-constraint error.
        Case.objects.select_for_update().filter(pk=case.pk).first()
        if Report.objects.filter(case_id=case.pk).exists():
            raise ReviewConflict(
                "This case is already signed; a signed report is locked. Add an addendum instead.",
                code="already_signed",
            )
        fresh = _case_with_results(case.pk)
        leading = selectors.leading_finding(case=fresh)
        if shown_ai_job_id is not None and (leading.job.pk if leading else 0) != shown_ai_job_id:
            now = f"{display_name(leading.label)} {leading.probability:.0%}" if leading else "none"
            raise ReviewConflict(
                f"The AI result changed since you opened this case (it is now: {now}). Review it and sign again.",
                code="ai_result_changed",
            )
        errors: dict[str, str] = {}
        impression = _text(impression, field="impression", missing="Write an impression before signing.", errors=errors)
        other_finding = (other_finding or "").strip()
        if agrees_with_ai:
            if leading is None:
                errors["agrees_with_ai"] = (
                    "There is no AI result to agree with: choose the finding yourself (override)."
                )
            elif final_label and final_label != leading.label:
                errors["final_label"] = (
                    f"You agreed with the AI finding ({display_name(leading.label)}) but chose "
                    f"{display_name(final_label[:64])} as the finding: agree, or override with your finding."
                )
            else:
                final_label, other_finding = leading.label, ""
        else:
            final_label = (final_label or "").strip()
            labels = selectors.class_labels(case=fresh)
            if not final_label:
                errors["final_label"] = "Choose the finding, or 'other finding' and describe it."
            elif final_label == Report.OTHER:
                _text(other_finding, field="other_finding", missing="Describe the other finding.", errors=errors)
            elif final_label not in labels:
                errors["final_label"] = (
                    f"'{final_label[:64]}' is not a class of this case's model; choose one of "
                    f"{', '.join(labels)} or 'other'."
                )
            else:
                other_finding = ""  # the text goes with 'other finding' only
        if errors:
            raise ValidationError(errors)
        report = Report(
            case_id=case.pk,
            ai_job=leading.job if leading else None,
            ai_label=leading.label if leading else "",
            ai_probability=leading.probability if leading else None,
            ai_model_name=leading.prediction.model_name if leading else "",
            ai_model_version=leading.prediction.model_version if leading else "",
            ai_results=selectors.ai_results(case=fresh),
            agrees_with_ai=leading is not None and final_label == leading.label,
            final_label=final_label,
            other_finding=other_finding,
            impression=impression,
            signed_by=signed_by,
        )
        report.full_clean(exclude=["case"])  # the lock and the unique constraint guard `case`
        try:
            with transaction.atomic():
                report.save()
        except IntegrityError:
            raise ReviewConflict("This case was signed a moment ago by someone else.", code="already_signed") from None
        # From now on the worklist shows the finding the report recorded, whatever arrives later.
        fresh.refresh_reading_order()
        report_signed.send(sender=Report, report=report, user=signed_by)
    return report


def addendum_add(*, case: Case, author: User, text: str) -> Addendum:
    """Amend a signed report: the report stays as signed; the addendum records who and when."""
    _check_department(case=case, user=author)
    errors: dict[str, str] = {}
    text = _text(text, field="text", missing="Write the addendum's text.", errors=errors)
    report = Report.objects.filter(case_id=case.pk).first()
    if report is None:
        raise ReviewConflict(NOT_SIGNED_MESSAGE, code="not_signed")
    if errors:
        raise ValidationError(errors)
    addendum = Addendum(report=report, text=text, author=author)
    addendum.full_clean()
    addendum.save()
    return addendum
