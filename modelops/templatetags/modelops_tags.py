"""Template helpers of modelops: rates with their intervals, and the drift alarms block that the
department dashboard (audit app) shows without importing this app."""

from __future__ import annotations

from django import template

from modelops import selectors, services
from modelops.metrics import Check, Rate

register = template.Library()


@register.filter
def rate(value: Rate | None) -> str:
    """ "85.0 % (17/20; 95 % CI 64.0–94.8 %)", or "—" with nothing to count."""
    if value is None or not value.n:
        return "—"
    low, high = value.ci95
    return f"{value.value * 100:.1f} % ({value.k}/{value.n}; 95 % CI {low * 100:.1f}–{high * 100:.1f} %)"


@register.filter
def statistic(name: str) -> str:
    return services.describe_statistic(name)


@register.filter
def observed(check: dict) -> str:
    """A stored check's observed value and band, as the alarm e-mail words them."""
    fmt = "{:.3f}" if check["statistic"] == "mean_top_probability" else "{:.1%}"
    text = fmt.format(check["observed"]) + f" (n={check['n']})"
    if check.get("low") is not None:
        text += f"; band {fmt.format(check['low'])} to {fmt.format(check['high'])}"
    return text


@register.inclusion_tag("modelops/_drift_alarms.html")
def drift_alarms(department_id: int | None, limit: int = 20) -> dict:
    alarms = selectors.drift_alarms_for(department_id=department_id, limit=limit) if department_id else []
    return {"alarms": alarms}


@register.filter
def check_text(check: Check | None) -> str:
    """A week's statistic and its band: "12.5 % (band 0.0–9.8 %)"; "—" when not measured."""
    if check is None:
        return "—"
    fmt = "{:.3f}" if check.statistic == "mean_top_probability" else "{:.1%}"
    text = fmt.format(check.observed)
    if check.band is None:
        return f"{text} (not judged, n={check.n})"
    return f"{text} (band {fmt.format(check.band.low)}–{fmt.format(check.band.high)})"


@register.filter
def week_check(week, statistic: str) -> Check | None:
    return week.check(statistic)
