"""Drift alarms: a week in which a model version behaved unlike its held-out test split here."""

from __future__ import annotations

from datetime import date, timedelta

from django.db import models
from django.utils import timezone

from accounts.models import Department
from diagnosis.models import Modality


class DriftAlarm(models.Model):
    """One model version, one department, one ISO week out of band (one row whatever the number
    of statistics out of band: they are listed in `checks`). Unique per week, so the daily check
    can run any number of times and raises, audits and e-mails each alarm once."""

    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="drift_alarms")
    modality = models.CharField(max_length=8, choices=Modality.choices)
    model_name = models.CharField(max_length=100)
    model_version = models.CharField(max_length=50)
    week_start = models.DateField(help_text="Monday of the ISO week")
    checks = models.JSONField(
        default=list, help_text="every statistic of the week: statistic, observed, n, low, high, out_of_band"
    )
    raised_at = models.DateTimeField(default=timezone.now)
    emailed_to = models.JSONField(default=list, blank=True, help_text="the department admins' addresses mailed")

    class Meta:
        ordering = ["-week_start", "model_name", "model_version"]
        constraints = [
            models.UniqueConstraint(
                fields=["department", "model_name", "model_version", "week_start"], name="one_drift_alarm_per_week"
            )
        ]

    def __str__(self) -> str:
        return f"Drift of {self.model_name} {self.model_version} in {self.department}, week {self.iso_week}"

    @property
    def iso_week(self) -> str:
        year, week, _ = self.week_start.isocalendar()
        return f"{year}-W{week:02d}"

    @property
    def week_end(self) -> date:
        return self.week_start + timedelta(days=6)

    @property
    def out_of_band(self) -> list[dict]:
        return [check for check in self.checks if check.get("out_of_band")]
