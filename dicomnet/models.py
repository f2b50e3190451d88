"""DICOM nodes of a department, what arrived from them, and what XNET sent back.

This app sits above `diagnosis` and `reviews`: it stores images through diagnosis services and
learns about results and signatures from their signals; neither of them imports it.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Department
from diagnosis.models import Case, Image, Prediction

# PS3.5 AE: 1-16 characters of the default repertoire, no backslash or control characters,
# leading/trailing spaces not significant.
AE_TITLE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


def validate_ae_title(value: str) -> None:
    if not value.strip() or not AE_TITLE_RE.match(value):
        raise ValidationError(
            "An AE title is 1 to 16 printable ASCII characters, without a backslash.", code="invalid_ae_title"
        )


class DicomNode(models.Model):
    """A modality or PACS of a department: it sends to XNET (incoming), receives XNET's results
    (destination), or both. An incoming node's AE title says which department owns what arrives,
    so it is unique among incoming nodes."""

    class Direction(models.TextChoices):
        INCOMING = "incoming", "Incoming (sends studies to XNET)"
        DESTINATION = "destination", "Destination (receives XNET's results)"
        BOTH = "both", "Both"

    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="dicom_nodes")
    name = models.CharField(max_length=100)
    ae_title = models.CharField("AE title", max_length=16, validators=[validate_ae_title])
    host = models.CharField(max_length=255, blank=True, help_text="where XNET sends results (destinations)")
    port = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    direction = models.CharField(max_length=16, choices=Direction.choices, default=Direction.BOTH)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    INCOMING_DIRECTIONS = (Direction.INCOMING, Direction.BOTH)
    DESTINATION_DIRECTIONS = (Direction.DESTINATION, Direction.BOTH)

    class Meta:
        ordering = ["department", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["ae_title"],
                condition=Q(direction__in=["incoming", "both"]),
                name="unique_incoming_ae_title",
                violation_error_message="Another department's or this department's incoming node has this AE title.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.ae_title})"

    def clean(self) -> None:
        super().clean()
        self.ae_title = (self.ae_title or "").strip()
        if self.direction in self.DESTINATION_DIRECTIONS and (not self.host or not self.port):
            raise ValidationError({"host": "A destination needs a host and a port for XNET to send results to."})

    @property
    def is_incoming(self) -> bool:
        return self.direction in self.INCOMING_DIRECTIONS

    @property
    def is_destination(self) -> bool:
        return self.direction in self.DESTINATION_DIRECTIONS


class StudyLink(models.Model):
    """One DICOM study (StudyInstanceUID) of a department is one XNET case."""

    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="+")
    study_instance_uid = models.CharField(max_length=64)
    case = models.OneToOneField(Case, on_delete=models.PROTECT, related_name="dicom_study")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["department", "study_instance_uid"], name="unique_study_per_department")
        ]

    def __str__(self) -> str:
        return f"Study {self.study_instance_uid} -> case {self.case_id}"


class ReceivedInstance(models.Model):
    """An instance stored from the network: a re-sent SOPInstanceUID finds this row and stores nothing."""

    class Source(models.TextChoices):
        DIMSE = "dimse", "DICOM C-STORE"
        STOW = "stow", "DICOMweb STOW-RS"

    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="+")
    sop_instance_uid = models.CharField(max_length=64)
    study = models.ForeignKey(StudyLink, on_delete=models.PROTECT, related_name="instances")
    image = models.OneToOneField(Image, on_delete=models.PROTECT, related_name="received_as")
    node = models.ForeignKey(DicomNode, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    source = models.CharField(max_length=8, choices=Source.choices)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["department", "sop_instance_uid"], name="unique_instance_per_department")
        ]

    def __str__(self) -> str:
        return f"Instance {self.sop_instance_uid}"


class IntakeEvent(models.Model):
    """Every instance that arrived, stored or not, with the reason when refused: the intake page."""

    class Outcome(models.TextChoices):
        STORED = "stored", "Stored"
        DUPLICATE = "duplicate", "Already stored"
        REFUSED = "refused", "Refused"

    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="+")
    node = models.ForeignKey(DicomNode, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    source = models.CharField(max_length=8, choices=ReceivedInstance.Source.choices)
    calling_ae = models.CharField(max_length=16, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    code = models.CharField(max_length=64, blank=True)
    reason = models.TextField(blank=True)
    sop_instance_uid = models.CharField(max_length=64, blank=True)
    study_instance_uid = models.CharField(max_length=64, blank=True)
    case = models.ForeignKey(Case, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_outcome_display()}: {self.sop_instance_uid or 'no SOP instance UID'}"


class Delivery(models.Model):
    """One object XNET sends to one destination: made once, sent until it succeeds or gives up.

    Unique per (destination, kind, source object), so a result or a signature announced twice
    sends nothing twice; the object's UIDs are fixed at creation, so a retry or a resend carries
    the same instance and the PACS files it once.
    """

    class Kind(models.TextChoices):
        SR = "sr", "Structured report (AI findings)"
        SC = "sc", "Secondary capture (heatmap)"
        PDF = "pdf", "Encapsulated PDF (signed report)"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        RETRYING = "retrying", "Waiting to retry"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    node = models.ForeignKey(DicomNode, on_delete=models.PROTECT, related_name="deliveries")
    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="dicom_deliveries")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    prediction = models.ForeignKey(Prediction, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    report = models.ForeignKey("reviews.Report", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    series_instance_uid = models.CharField(max_length=64)
    sop_instance_uid = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True, help_text="when the current or last attempt began")
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="when a waiting retry is due")
    sent_at = models.DateTimeField(null=True, blank=True)
    resent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["node", "kind", "prediction"],
                condition=Q(prediction__isnull=False),
                name="unique_delivery_per_prediction",
            ),
            models.UniqueConstraint(
                fields=["node", "kind", "report"], condition=Q(report__isnull=False), name="unique_delivery_per_report"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of case {self.case_id} to {self.node}"
