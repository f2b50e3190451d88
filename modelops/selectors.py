"""Reads for local validation and drift: a model version's results on a department's cases,
against the labels radiologists signed (reviews.Report.final_label).

A case's result for a version is what the case page would show if that version were assistive:
among each current image's latest job of the version, the leading one (diagnosis.models.leading_job:
AI-positive first, then the most probable). The signed label is per case, so validation is per
case, whatever the number of images.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from diagnosis.models import InferenceJob, ModelDeployment, leading_job
from ml.registry import ModelSpec, find_model
from modelops import metrics as M
from modelops.models import DriftAlarm
from reviews.models import Report

S = InferenceJob.Status


def model_spec(name: str, version: str) -> ModelSpec | None:
    return find_model(Path(settings.XNET_MODEL_DIR), name, version)


def model_classes(name: str, version: str, *, seen: Iterable[str] = ()) -> list[str]:
    """The version's classes from its model folder (every class, even one never predicted here);
    for a version no longer installed, the labels its results carry."""
    spec = model_spec(name, version)
    if spec is not None:
        return list(spec.classes)
    return sorted(set(seen) - {Report.OTHER})


def deployment_for(*, department_id: int, name: str, version: str) -> ModelDeployment | None:
    return ModelDeployment.objects.filter(department_id=department_id, model_name=name, model_version=version).first()


def deployments_of(*, department_id: int) -> QuerySet[ModelDeployment]:
    return ModelDeployment.objects.filter(department_id=department_id).order_by(
        "modality", "model_name", "model_version"
    )


# Validation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseResult:
    case_id: int
    signed_label: str
    label: str | None  # the version's result for the case; None: no image classified
    probability: float | None
    images_judged: int  # images the gate classified or refused
    images_refused: int


def case_results(*, department_id: int, name: str, version: str) -> list[CaseResult]:
    """Every signed case of the department on which the version ran (two queries)."""
    signed = dict(
        Report.objects.filter(case__patient__department_id=department_id).values_list("case_id", "final_label")
    )
    if not signed:
        return []
    jobs = (
        InferenceJob.objects.filter(
            model_name=name,
            model_version=version,
            image__case_id__in=list(signed),
            image__withdrawn_at__isnull=True,
        )
        .select_related("prediction", "image")
        .order_by("created_at", "id")
    )
    latest: dict[int, dict[int, InferenceJob]] = defaultdict(dict)
    for job in jobs:
        latest[job.image.case_id][job.image_id] = job
    results = []
    for case_id, per_image in latest.items():
        lead = leading_job(per_image.values())
        judged = sum(1 for job in per_image.values() if job.status in (S.SUCCEEDED, S.REJECTED))
        refused = sum(1 for job in per_image.values() if job.status == S.REJECTED)
        results.append(
            CaseResult(
                case_id=case_id,
                signed_label=signed[case_id],
                label=lead.prediction.top_label if lead else None,
                probability=lead.prediction.top_probability if lead else None,
                images_judged=judged,
                images_refused=refused,
            )
        )
    return sorted(results, key=lambda result: result.case_id)


@dataclass
class Validation:
    """A version's figures on a set of signed cases (modelops.metrics on CaseResults)."""

    name: str
    version: str
    classes: list[str]
    results: list[CaseResult]
    matrix_rows: list[str] = field(init=False)
    matrix: list[list[int]] = field(init=False)
    rates: list[M.ClassRates] = field(init=False)
    bins: list[M.CalibrationBin] = field(init=False)

    def __post_init__(self) -> None:
        pairs = self.pairs
        self.matrix_rows, self.matrix = M.confusion_matrix(pairs, self.classes)
        self.rates = M.class_rates(pairs, self.classes)
        classified = [r for r in self.results if r.label is not None]
        self.bins = M.calibration_bins(
            [r.probability for r in classified], [r.label == r.signed_label for r in classified]
        )

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(r.signed_label, r.label) for r in self.results if r.label is not None]

    @property
    def signed_cases(self) -> int:
        """Signed cases the figures rest on: those the version gave a result for."""
        return len(self.pairs)

    @property
    def cases_without_result(self) -> int:
        return sum(1 for r in self.results if r.label is None)

    @property
    def accuracy(self) -> M.Rate:
        return M.Rate(sum(1 for ref, pred in self.pairs if ref == pred), len(self.pairs))

    @property
    def ece(self) -> float | None:
        return M.expected_calibration_error(self.bins)

    @property
    def refusal(self) -> M.Rate:
        return M.refusal_rate(sum(r.images_refused for r in self.results), sum(r.images_judged for r in self.results))

    @property
    def signed_per_class(self) -> dict[str, int]:
        return {rate.label: rate.signed for rate in self.rates}

    @property
    def matrix_table(self) -> list[tuple[str, list[int]]]:
        return list(zip(self.matrix_rows, self.matrix, strict=True))


def validation(
    *, department_id: int, name: str, version: str, case_ids: set[int] | None = None, results=None
) -> Validation:
    """The version's validation on the department's signed cases (or only on `case_ids`)."""
    results = results if results is not None else case_results(department_id=department_id, name=name, version=version)
    if case_ids is not None:
        results = [r for r in results if r.case_id in case_ids]
    classes = model_classes(
        name, version, seen=[r.label for r in results if r.label] + [r.signed_label for r in results]
    )
    return Validation(name=name, version=version, classes=classes, results=results)


@dataclass
class Comparison:
    """The candidate and the current assistive version on the signed cases both gave a result for."""

    candidate: Validation
    assistive: Validation

    @property
    def cases(self) -> int:
        return self.candidate.signed_cases


def comparison(*, department_id: int, candidate: Validation, assistive: ModelDeployment) -> Comparison:
    theirs = case_results(department_id=department_id, name=assistive.model_name, version=assistive.model_version)
    both = {r.case_id for r in candidate.results if r.label} & {r.case_id for r in theirs if r.label}
    return Comparison(
        candidate=validation(
            department_id=department_id, name=candidate.name, version=candidate.version, case_ids=both,
            results=candidate.results,
        ),
        assistive=validation(
            department_id=department_id, name=assistive.model_name, version=assistive.model_version, case_ids=both,
            results=theirs,
        ),
    )  # fmt: skip


# Drift -----------------------------------------------------------------------------------------


def week_start_of(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def week_stats(*, department_id: int, name: str, version: str, week_start: date) -> M.WeekStats:
    """The version's work on the department's images uploaded in the week (Monday to Sunday,
    server time): each image's latest job of the version, and agreement on the signed cases."""
    jobs = (
        InferenceJob.objects.filter(
            model_name=name,
            model_version=version,
            image__case__patient__department_id=department_id,
            image__withdrawn_at__isnull=True,
            image__uploaded_at__gte=_day_start(week_start),
            image__uploaded_at__lt=_day_start(week_start + timedelta(days=7)),
        )
        .select_related("prediction", "image")
        .order_by("created_at", "id")
    )
    latest: dict[int, InferenceJob] = {}
    for job in jobs:
        latest[job.image_id] = job
    stats = M.WeekStats()
    per_case: dict[int, list[InferenceJob]] = defaultdict(list)
    for job in latest.values():
        if job.status not in (S.SUCCEEDED, S.REJECTED):
            continue
        stats.judged += 1
        if job.status == S.REJECTED:
            stats.refused += 1
        scores = job.gate_scores or {}
        distance, threshold = scores.get("ood_distance"), scores.get("ood_threshold")
        if isinstance(distance, int | float) and isinstance(threshold, int | float) and threshold > 0:
            stats.distances.append(float(distance) / float(threshold))
        prediction = getattr(job, "prediction", None) if job.status == S.SUCCEEDED else None
        if prediction is not None:
            stats.predicted[prediction.top_label] = stats.predicted.get(prediction.top_label, 0) + 1
            stats.top_probabilities.append(prediction.top_probability)
        per_case[job.image.case_id].append(job)
    signed = dict(Report.objects.filter(case_id__in=list(per_case)).values_list("case_id", "final_label"))
    for case_id, final_label in signed.items():
        lead = leading_job(per_case[case_id])
        if lead is not None:
            stats.signed += 1
            stats.agreed += lead.prediction.top_label == final_label
    return stats


def drift_alarms_for(*, department_id: int, limit: int = 20) -> list[DriftAlarm]:
    return list(DriftAlarm.objects.filter(department_id=department_id)[:limit])
