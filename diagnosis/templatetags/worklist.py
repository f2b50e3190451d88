"""Worklist cells: a patient's age, the elapsed wait, the reading-status words."""

from __future__ import annotations

from datetime import date, datetime

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def age(birth_date: date | None, on: datetime | None = None) -> str:
    """Whole years ("67 y"); months under two years ("8 mo"), the unit a reader expects for an
    infant's chest film; "" without a birth date."""
    if birth_date is None:
        return ""
    today = timezone.localdate(on) if on else timezone.localdate()
    months = (today.year - birth_date.year) * 12 + today.month - birth_date.month - (today.day < birth_date.day)
    months = max(months, 0)
    return f"{months} mo" if months < 24 else f"{months // 12} y"


@register.filter
def elapsed(since: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in the words a reading room uses: "just now", "42 min", "3 h 5 min",
    "2 d 4 h"; "" for no time."""
    if since is None:
        return ""
    minutes = int(((now or timezone.now()) - since).total_seconds() // 60)
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


@register.filter
def ago(since: datetime | None, now: datetime | None = None) -> str:
    """ "42 min ago", or "just now"."""
    words = elapsed(since, now)
    return words if words in ("", "just now") else f"{words} ago"
