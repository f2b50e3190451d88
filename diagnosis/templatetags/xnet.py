"""Template filters for clinical display: label names, percentages, durations."""

from __future__ import annotations

from datetime import timedelta

from django import template

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
