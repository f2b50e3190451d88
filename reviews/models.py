"""Radiologist sign-off: one signed report per case, then addenda; nothing is ever overwritten.

The AI result the radiologist saw is copied into the report when it is signed, so a later
re-run of the model cannot change what the record says the AI found.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from diagnosis.models import Case, InferenceJob


class LockedRecordError(Exception):
    """A signed report or an addendum was about to be changed or deleted."""


class ImmutableQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise LockedRecordError(f"{self.model.__name__} rows are locked once written")

    def delete(self):
        raise LockedRecordError(f"{self.model.__name__} rows are locked once written")


class ImmutableModel(models.Model):
    """Rows are written once; save() of an existing row and delete() raise."""

    objects = ImmutableQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise LockedRecordError(f"{type(self).__name__} {self.pk} is locked; add an addendum instead")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise LockedRecordError(f"{type(self).__name__} {self.pk} is locked and cannot be deleted")


class Report(ImmutableModel):
    OTHER = "other"  # final_label when the finding is none of the model's classes (see other_finding)

    case = models.OneToOneField(Case, on_delete=models.PROTECT, related_name="report")
    # The AI result shown when signing (the case's leading finding), copied, not referenced only.
    ai_job = models.ForeignKey(InferenceJob, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    ai_label = models.CharField(max_length=64, blank=True)
    ai_probability = models.FloatField(null=True, blank=True)
    ai_model_name = models.CharField(max_length=100, blank=True)
    ai_model_version = models.CharField(max_length=50, blank=True)
    ai_results = models.JSONField(
        default=list, blank=True, help_text="every image's latest AI result at signing (status, label, probabilities)"
    )
    agrees_with_ai = models.BooleanField()
    final_label = models.CharField(max_length=64, help_text="a class label of the model, or 'other'")
    other_finding = models.TextField(blank=True)
    impression = models.TextField()
    signed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    signed_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-signed_at"]

    def __str__(self) -> str:
        return f"Report on case {self.case_id} ({self.final_label})"

    @property
    def disagrees_with_ai(self) -> bool:
        return bool(self.ai_label) and self.final_label != self.ai_label


class Addendum(ImmutableModel):
    report = models.ForeignKey(Report, on_delete=models.PROTECT, related_name="addenda")
    text = models.TextField()
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "addenda"

    def __str__(self) -> str:
        return f"Addendum {self.pk} to report {self.report_id}"
