"""Reads for the FHIR endpoints, scoped to the user's department like the REST API: another
department's report or patient is simply not found (404), and a search finds nothing of it."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from accounts.models import User
from diagnosis import selectors as diagnosis_selectors
from diagnosis.models import Case, Patient
from reviews import selectors as review_selectors
from reviews.models import Addendum, Report


def signed_reports(*, user: User) -> QuerySet[Report]:
    """The department's signed reports with what the FHIR resources need, newest first."""
    addenda = Addendum.objects.select_related("author").order_by("created_at", "id")
    return (
        review_selectors.report_list_for_user(user=user)
        .select_related("case__patient", "signed_by")
        .prefetch_related(Prefetch("addenda", queryset=addenda))
        .order_by("-signed_at", "-id")
    )


def signed_report(*, user: User, report_id: int) -> Report:
    """Raises Report.DoesNotExist for an unknown id or another department's report."""
    return signed_reports(user=user).get(pk=report_id)


def patient(*, user: User, patient_id: int) -> Patient:
    """Raises Patient.DoesNotExist for an unknown id or another department's patient."""
    return diagnosis_selectors.patient_list_for_user(user=user).get(pk=patient_id)


def case_for_pdf(*, user: User, report: Report) -> Case:
    """The report's case with images and jobs prefetched, as the PDF renderer reads them."""
    return review_selectors.case_for_review(user=user, case_id=report.case_id)


def ai_finding_shown(report: Report) -> bool:
    """Whether the report holds an AI finding. Sign-off records only results of models that were
    assistive in the department (issue 12: a silent model's result is never shown, so never signed
    against); a model demoted after the signature keeps its result in the signed record, as in
    the PDF that goes with it."""
    return bool(report.ai_label)
