"""What each event says: small JSON documents with ids and the result, never the images.

job.finished: the job's status and, when it succeeded, its result; only for jobs of a model that
is assistive in the department (issue 12): a silent model's jobs stay inside XNET, as on the pages
and in the API, where they are 404s.
report.signed: the signed report's findings, and the FHIR address of the full report.
"""

from __future__ import annotations

from django.urls import reverse

from diagnosis.model_status import is_assistive
from diagnosis.models import InferenceJob, Prediction
from reviews.models import Report
from webhooks import services
from webhooks.models import Event


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def job_finished(job_id: int) -> None:
    job = (
        InferenceJob.objects.select_related("image__case__patient")
        .filter(pk=job_id, status__in=InferenceJob.FINISHED)
        .first()
    )
    if job is None:
        return
    case = job.image.case
    department_id = case.patient.department_id
    if not is_assistive(department_id=department_id, model_name=job.model_name, model_version=job.model_version):
        return
    result = None
    prediction = Prediction.objects.filter(job=job).first()
    if prediction is not None:
        result = {
            "label": prediction.top_label,
            "probability": prediction.top_probability,
            "probabilities": prediction.probabilities,
        }
    data = {
        "job": {
            "id": job.pk,
            "url": reverse("api:job-detail", args=[job.pk]),
            "status": job.status,
            "model_name": job.model_name,
            "model_version": job.model_version,
            "finished_at": _iso(job.finished_at),
            "rejection_code": job.rejection_code or None,
            "result": result,
        },
        "image": {"id": job.image_id, "position": job.image.position},
        "case": {"id": case.pk, "modality": case.modality},
        "patient": {"id": case.patient_id, "mrn": case.patient.mrn},
    }
    services.deliveries_create(
        department_id=department_id, event=Event.JOB_FINISHED, object_key=f"job:{job.pk}", data=data
    )


def report_signed(report_id: int) -> None:
    report = Report.objects.select_related("case__patient", "signed_by").filter(pk=report_id).first()
    if report is None:
        return
    case = report.case
    data = {
        "report": {
            "id": report.pk,
            "fhir_url": reverse("fhir:diagnosticreport", args=[report.pk]),
            "api_url": reverse("api:case-report", args=[case.pk]),
            "final_label": report.final_label,
            "other_finding": report.other_finding,
            "agrees_with_ai": report.agrees_with_ai,
            "signed_by": report.signed_by.username,
            "signed_at": _iso(report.signed_at),
        },
        "case": {"id": case.pk, "modality": case.modality},
        "patient": {"id": case.patient_id, "mrn": case.patient.mrn},
    }
    services.deliveries_create(
        department_id=case.patient.department_id,
        event=Event.REPORT_SIGNED,
        object_key=f"report:{report.pk}",
        data=data,
    )
