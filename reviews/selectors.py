"""Reads for sign-off, always scoped to the user's department (another department's case is a 404).

The leading AI finding comes from the case's prefetched images and jobs through
diagnosis.models.leading_job, the rule the worklist's stored reading order uses too.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import F, Prefetch, QuerySet

from accounts.models import User
from diagnosis import selectors as diagnosis_selectors
from diagnosis.model_status import assistive_keys, job_evidence
from diagnosis.models import Case, Image, InferenceJob, Prediction, leading_job
from ml.registry import model_for
from reviews.models import Addendum, Report

# The class lists of the shipped models, used when a case has no prediction and no model is
# installed for its modality (the radiologist still signs with a label from the usual list).
DEFAULT_CLASSES = {
    "xray": ("normal", "pneumonia", "covid", "tuberculosis"),
    "ct": ("covid", "non_covid"),
}


@dataclass(frozen=True)
class LeadingFinding:
    """The AI result a radiologist agrees with or overrides: one image's latest prediction."""

    job: InferenceJob
    prediction: Prediction

    @property
    def label(self) -> str:
        return self.prediction.top_label

    @property
    def probability(self) -> float:
        return self.prediction.top_probability


def case_for_review(*, user: User, case_id: int) -> Case:
    """The case with images, jobs and predictions prefetched (raises Case.DoesNotExist)."""
    return diagnosis_selectors.case_detail(user=user, case_id=case_id)


def _assistive_keys(case: Case) -> set[tuple[str, str]]:
    """The department's assistive model versions, read once per case object."""
    keys = getattr(case, "_assistive_keys", None)
    if keys is None:
        keys = assistive_keys(department_id=case.patient.department_id)
        case._assistive_keys = keys
    return keys


def _latest_jobs(case: Case) -> list[tuple[Image, InferenceJob | None]]:
    """Each image's latest job of an assistive model (issue 12): a silent model's result is never
    signed against, recorded in a report or printed, whatever queryset loaded the case."""
    keys = _assistive_keys(case)
    result = []
    for image in case.images.all():
        shown = (job for job in image.jobs.all() if (job.model_name, job.model_version) in keys)
        jobs = sorted(shown, key=lambda job: (job.created_at, job.pk))
        result.append((image, jobs[-1] if jobs else None))
    return result


def _prediction(job: InferenceJob | None) -> Prediction | None:
    if job is None or job.status != InferenceJob.Status.SUCCEEDED:
        return None
    try:
        return job.prediction
    except Prediction.DoesNotExist:
        return None


def leading_finding(*, case: Case) -> LeadingFinding | None:
    """Among each image's latest successful prediction: AI-positive before negative, then the
    most probable (diagnosis.models.leading_job); None when no image has an AI result."""
    job = leading_job(job for _, job in _latest_jobs(case) if job is not None)
    return LeadingFinding(job=job, prediction=job.prediction) if job else None


def ai_results(*, case: Case) -> list[dict]:
    """Every image's latest AI result, as the report keeps it (a copy, not a reference)."""
    results = []
    for image, job in _latest_jobs(case):
        prediction = _prediction(job)
        results.append(
            {
                "image": image.pk,
                "position": image.position,
                "job": job.pk if job else None,
                "status": job.status if job else None,
                "label": prediction.top_label if prediction else None,
                "probability": prediction.top_probability if prediction else None,
                "probabilities": dict(prediction.probabilities) if prediction else {},
                "model_name": (prediction.model_name if prediction else job.model_name) if job else "",
                "model_version": (prediction.model_version if prediction else job.model_version) if job else "",
                "rejection_reason": job.rejection_reason if job else "",
                # The model's status and evidence as shown when signing (the PDF prints it).
                "model_status": _evidence_text(job),
            }
        )
    return results


def _evidence_text(job: InferenceJob | None) -> str:
    # Computed now, not from the page's cache: the report keeps the line as it was when signed.
    evidence = job_evidence(job, use_cache=False) if job is not None else None
    return evidence.text if evidence is not None else ""


def class_labels(*, case: Case) -> list[str]:
    """The labels a radiologist may sign: the classes of the models that classified this case
    (their probabilities' keys), else the installed model's for the modality, else the usual list."""
    labels: list[str] = []
    for _, job in _latest_jobs(case):
        prediction = _prediction(job)
        for label in prediction.probabilities if prediction else ():
            if label not in labels:
                labels.append(label)
    if labels:
        return labels
    spec = model_for(case.modality, settings.XNET_MODEL_DIR)
    return list(spec.classes if spec else DEFAULT_CLASSES.get(case.modality, ()))


def report_for_case(*, case: Case) -> Report | None:
    """The case's signed report with its signer and addenda (oldest first), or None."""
    addenda = Addendum.objects.select_related("author").order_by("created_at", "id")
    return (
        Report.objects.select_related("signed_by", "ai_job")
        .prefetch_related(Prefetch("addenda", queryset=addenda))
        .filter(case=case)
        .first()
    )


def report_list_for_user(*, user: User) -> QuerySet[Report]:
    department_id = user.department_id if user.is_authenticated and user.is_active else None
    return Report.objects.filter(case__patient__department_id=department_id)


def disagreement_list(*, user: User) -> QuerySet[Report]:
    """Signed reports whose final label differs from the AI's top label, most recent first."""
    return (
        report_list_for_user(user=user)
        .exclude(ai_label="")
        .exclude(final_label=F("ai_label"))
        .select_related("case__patient", "signed_by")
        .order_by("-signed_at", "-id")
    )
