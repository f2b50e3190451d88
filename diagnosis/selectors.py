"""Reads, always scoped to the user's department.

Views and API views fetch objects only through these functions, so another department's object
is simply not found (404), never "forbidden" (which would confirm that it exists).
"""

from __future__ import annotations

from datetime import date, timedelta

from django.conf import settings
from django.db import models
from django.db.models import F, OuterRef, Prefetch, Q, QuerySet, Subquery, Value, When
from django.utils import timezone

from accounts.models import User
from diagnosis.models import NEGATIVE_FINDINGS, Case, Image, InferenceJob, Modality, Patient, Prediction


def _department_id(user: User) -> int | None:
    return user.department_id if user.is_authenticated and user.is_active else None


def patient_list_for_user(*, user: User) -> QuerySet[Patient]:
    return Patient.objects.filter(department_id=_department_id(user))


def case_list_for_user(*, user: User) -> QuerySet[Case]:
    return Case.objects.filter(patient__department_id=_department_id(user)).select_related("patient", "created_by")


def image_list_for_user(*, user: User) -> QuerySet[Image]:
    """The department's images; a withdrawn image is gone from pages and API (404)."""
    return (
        Image.objects.current()
        .filter(case__patient__department_id=_department_id(user))
        .select_related("case__patient")
    )


def job_list_for_user(*, user: User) -> QuerySet[InferenceJob]:
    return InferenceJob.objects.filter(
        image__case__patient__department_id=_department_id(user), image__withdrawn_at__isnull=True
    ).select_related("image__case__patient", "prediction")


def prediction_list_for_user(*, user: User) -> QuerySet[Prediction]:
    return Prediction.objects.filter(
        job__image__case__patient__department_id=_department_id(user), job__image__withdrawn_at__isnull=True
    ).select_related("job__image__case")


def _latest_job(field: str) -> Subquery:
    jobs = InferenceJob.objects.filter(image__case=OuterRef("pk"), image__withdrawn_at__isnull=True)
    jobs = jobs.order_by("-created_at", "-id")
    return Subquery(jobs.values(field)[:1])


# Findings that call for no action: every other class label of a model is AI-positive (urgent).


class Triage(models.IntegerChoices):
    """Worklist tiers, in reading order."""

    OVERDUE = 0, "Waiting past the maximum wait"
    POSITIVE = 1, "AI-positive finding"
    WAITING = 2, "Waiting (negative, failed or pending AI result)"
    NO_IMAGES = 3, "No images yet"
    SIGNED = 4, "Signed"


def _triaged(cases: QuerySet[Case]) -> QuerySet[Case]:
    """Reading order, computed in the database: overdue unsigned cases (longest wait first), then
    AI-positive ones (most probable first), then the rest waiting (longest first), cases without
    images (newest first), and signed cases last (most recently signed first).

    A case waits from its first upload: before that there is nothing to read.
    """
    cutoff = timezone.now() - timedelta(minutes=settings.XNET_TRIAGE_MAX_WAIT_MINUTES)
    # waiting_since, lead_label and lead_probability are stored on the case
    # (Case.refresh_reading_order), so this orders plain columns.
    cases = cases.annotate(
        triage=models.Case(
            When(report__isnull=False, then=Value(Triage.SIGNED)),
            When(waiting_since__lt=cutoff, then=Value(Triage.OVERDUE)),
            When(~Q(lead_label="") & ~Q(lead_label__in=NEGATIVE_FINDINGS), then=Value(Triage.POSITIVE)),
            When(waiting_since__isnull=False, then=Value(Triage.WAITING)),
            default=Value(Triage.NO_IMAGES),
        ),
    )
    in_tier = {tier: Q(triage=tier) for tier in Triage}
    return cases.order_by(
        "triage",
        models.Case(When(in_tier[Triage.OVERDUE] | in_tier[Triage.WAITING], then=F("waiting_since"))).asc(
            nulls_last=True
        ),
        models.Case(When(in_tier[Triage.POSITIVE], then=F("lead_probability"))).desc(nulls_last=True),
        models.Case(When(in_tier[Triage.SIGNED], then=F("report__signed_at"))).desc(nulls_last=True),
        "-created_at",
        "-id",
    )


def worklist(
    *,
    user: User,
    status: str | None = None,
    modality: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    search: str | None = None,
    triage: bool = False,
) -> QuerySet[Case]:
    """The department's cases, each annotated with its latest job's status and top finding and
    its signed report, in a constant number of queries whatever the number of cases.

    Newest first; with `triage`, in reading order (see _triaged): the worklist page uses that,
    the API keeps its documented newest-first order.
    """
    cases = case_list_for_user(user=user).select_related("report__signed_by")
    cases = cases.annotate(
        latest_status=_latest_job("status"),
        latest_top_label=_latest_job("prediction__top_label"),
        latest_top_probability=_latest_job("prediction__top_probability"),
    )
    if triage:
        cases = _triaged(cases)
    if status == "none":
        cases = cases.filter(latest_status__isnull=True)
    elif status:
        cases = cases.filter(latest_status=status)
    if modality in Modality.values:
        cases = cases.filter(modality=modality)
    if date_from:
        cases = cases.filter(created_at__date__gte=date_from)
    if date_to:
        cases = cases.filter(created_at__date__lte=date_to)
    if search:
        cases = cases.filter(Q(patient__mrn__icontains=search) | Q(patient__name__icontains=search))
    return cases


def case_detail(*, user: User, case_id: int) -> Case:
    """One case with its images (withdrawn ones left out), jobs and predictions prefetched
    (raises Case.DoesNotExist)."""
    jobs = InferenceJob.objects.select_related("prediction").order_by("created_at", "id")
    return (
        case_list_for_user(user=user)
        .select_related("report__signed_by")  # the API's report summary, in the same query
        .prefetch_related(
            Prefetch("images", queryset=Image.objects.current().prefetch_related(Prefetch("jobs", queryset=jobs)))
        )
        .get(pk=case_id)
    )


def patient_history(*, patient: Patient) -> QuerySet[Case]:
    """All of a patient's cases with their uploads, oldest upload first within a case."""
    jobs = InferenceJob.objects.select_related("prediction").order_by("created_at", "id")
    images = Image.objects.current().select_related("uploaded_by").prefetch_related(Prefetch("jobs", queryset=jobs))
    return (
        patient.cases.select_related("created_by")
        .prefetch_related(Prefetch("images", queryset=images))
        .order_by("-created_at", "-id")
    )
