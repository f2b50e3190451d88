"""Template filters for clinical display: label names, percentages, durations."""

from __future__ import annotations

from datetime import timedelta

from django import template

from diagnosis.warmup import LOADING_NOTE, first_after_start
from ml.labels import display_name

register = template.Library()


@register.filter
def label(value: str | None) -> str:
    """A model class label as a radiologist reads it ("covid" -> "COVID-19")."""
    return display_name(value) if value else ""


@register.filter
def percent(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value * 100:.1f} %"


@register.filter
def bar_width(value: float | None) -> str:
    """A CSS width for a probability bar, independent of the locale's decimal separator."""
    if value is None:
        return "0%"
    return f"{min(max(value, 0.0), 1.0) * 100:.1f}%"


@register.filter
def duration(value: timedelta | None) -> str:
    if value is None:
        return "—"
    seconds = max(value.total_seconds(), 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@register.filter
def model_evidence(job):
    """A shown job's evidence line (model status, what it rests on here, validation page link),
    or None when its model is not assistive in the department (issue 12)."""
    from diagnosis.model_status import job_evidence

    return job_evidence(job) if job else None


@register.filter
def no_model_message(image) -> str:
    """For an image without a shown result: no model version is assistive for its modality here."""
    from diagnosis.model_status import assistive_deployment, no_validated_model_message

    modality = getattr(image, "modality", "") or ""
    if modality and assistive_deployment(department=image.case.patient.department_id, modality=modality):
        return (
            "No result of this department's validated model for this image (it was uploaded before that model "
            "became assistive): read it without AI support."
        )
    return no_validated_model_message(modality)


@register.filter
def loading_note(job) -> str:
    """ "Loading the model ..." for a waiting job that is its workers' first since they started."""
    return LOADING_NOTE if job is not None and first_after_start(job) else ""
