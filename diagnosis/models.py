"""Patients, cases, uploaded images, inference jobs and their predictions.

Department scoping runs through Patient.department; selectors.py holds the scoped querysets.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import timedelta
from pathlib import PurePath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from accounts.models import Department

# Findings that are not a disease: every other label counts as AI-positive for triage.
NEGATIVE_FINDINGS = ("normal", "non_covid")


class Modality(models.TextChoices):
    XRAY = "xray", "Chest X-ray"
    CT = "ct", "Chest CT"


class Patient(models.Model):
    class Sex(models.TextChoices):
        FEMALE = "F", "Female"
        MALE = "M", "Male"
        OTHER = "O", "Other"
        UNKNOWN = "U", "Unknown"

    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="patients")
    mrn = models.CharField("medical record number", max_length=64)
    name = models.CharField(max_length=200)
    birth_date = models.DateField(null=True, blank=True)
    sex = models.CharField(max_length=1, choices=Sex.choices, default=Sex.UNKNOWN)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "mrn"]
        constraints = [
            models.UniqueConstraint(fields=["department", "mrn"], name="unique_mrn_per_department"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.mrn})"

    def save(self, *args, **kwargs) -> None:
        update_fields = kwargs.get("update_fields")
        moved = False
        if update_fields is None or "department" in update_fields or "department_id" in update_fields:
            moved = self.refuse_moving_signed_cases()
        with transaction.atomic():
            super().save(*args, **kwargs)
            # Which results are shown, and so each case's reading order and latest shown job,
            # follows the department's model statuses: the (unsigned) cases moved with the patient.
            for case in self.cases.order_by("pk") if moved else ():
                case.refresh_reading_order()

    def clean(self) -> None:
        super().clean()
        self.refuse_moving_signed_cases()

    def refuse_moving_signed_cases(self) -> bool:
        """A signed report is the record of what was found for this patient in this department:
        moving the patient to another department would move its signed cases with it. Checked in
        clean() (the Django admin's form) and again in save(), for every other writer.
        True when the patient moves (to another department, with no signed case)."""
        if self._state.adding or self.pk is None:
            return False
        before = Patient.objects.filter(pk=self.pk).values_list("department_id", flat=True).first()
        if before is None or before == self.department_id:
            return False
        # The report lives in the reviews app, which builds on this one: read it by relation.
        if self.cases.filter(report__isnull=False).exists():
            message = "This patient has signed cases; a signed case cannot move to another department."
            raise ValidationError({"department": ValidationError(message, code="signed_case_locked")})
        return True


def job_assistive_deployments(department_id: int | models.Expression, *, job_path: str = "") -> models.QuerySet:
    """The deployment row that makes the outer query's job (or the job at `job_path`, e.g.
    "job__" from a prediction) assistive in the department: wrapped in Exists, it keeps what
    radiologists may see. The department is a constant where it is known (the reading order), else
    an OuterRef (diagnosis.model_status.assistive_q)."""
    return ModelDeployment.objects.filter(
        department_id=department_id,
        model_name=models.OuterRef(f"{job_path}model_name"),
        model_version=models.OuterRef(f"{job_path}model_version"),
        status=ModelDeployment.Status.ASSISTIVE,
    )


class CaseQuerySet(models.QuerySet):
    def refresh_latest_jobs(self, *, department_id: int) -> int:
        """Recompute Case.latest_job for these cases of one department in one UPDATE (after
        locking them): what refresh_reading_order stores, for many cases at once (a model's status
        changed, so which of their jobs are shown changed, signed cases included). 10,000 cases
        took 0.7 s."""
        latest = (
            InferenceJob.objects.filter(
                models.Exists(job_assistive_deployments(department_id)),
                image__case=models.OuterRef("pk"),
                image__withdrawn_at__isnull=True,
            )
            .order_by("-created_at", "-id")
            .values("pk")[:1]
        )
        cases = self.filter(patient__department_id=department_id)
        with transaction.atomic():
            # Row locks in id order first, the order every other writer of case rows takes them
            # (signals.reading_order_once): one UPDATE would take them in scan order and could
            # deadlock with a worker storing results for several cases.
            list(cases.select_for_update().order_by("pk").values_list("pk", flat=True))
            return cases.update(latest_job=models.Subquery(latest))


class Case(models.Model):
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="cases")
    modality = models.CharField(max_length=8, choices=Modality.choices)
    indication = models.TextField("clinical indication", blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Reading order, kept up to date by refresh_reading_order() whenever an image, job or
    # prediction of the case is saved (diagnosis/signals.py). Stored rather than computed per
    # query: ordering 10,000 cases by correlated subqueries took two seconds a page.
    waiting_since = models.DateTimeField(null=True, blank=True, help_text="first image upload")
    lead_label = models.CharField(max_length=64, blank=True, help_text="the leading AI finding (see below)")
    lead_probability = models.FloatField(null=True, blank=True)
    # The case's latest job of a model assistive in its department, on a current image: the
    # worklist's "AI job" column and job-status filter read its status through this one join.
    # Kept with the reading order (refresh_reading_order); claiming or releasing a job changes
    # its status, never which job is latest, so the worker's hot path does not touch it.
    latest_job = models.ForeignKey(
        "InferenceJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )

    objects = CaseQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        # The API's case list reads newest first by keyset on (created_at, id): one index walk.
        indexes = [models.Index(fields=["-created_at", "-id"], name="case_newest_first")]

    def __str__(self) -> str:
        return f"Case {self.pk} ({self.get_modality_display()})"

    def save(self, *args, **kwargs) -> None:
        update_fields = kwargs.get("update_fields")
        if update_fields is None or "patient" in update_fields or "patient_id" in update_fields:
            self.refuse_moving_if_signed()
        super().save(*args, **kwargs)

    def clean(self) -> None:
        super().clean()
        self.refuse_moving_if_signed()

    def refuse_moving_if_signed(self) -> None:
        """A signed case stays with the patient (and so the department) it was signed for: the
        report, its PDF and the audit trail all name that patient. Checked in clean() (the Django
        admin's form) and again in save(), for every other writer."""
        if self._state.adding or self.pk is None:
            return
        before = Case.objects.filter(pk=self.pk).values_list("patient_id", "report").first()
        if before is None or before[0] == self.patient_id or before[1] is None:
            return
        message = "This case is signed; a signed case cannot move to another patient or department."
        raise ValidationError({"patient": ValidationError(message, code="signed_case_locked")})

    def refresh_reading_order(self) -> None:
        """Recompute waiting_since and the leading AI finding: among each image's latest job of a
        model assistive in the department (issue 12), the succeeded ones; AI-positive before negative,
        then the most probable, then the newest.
        Withdrawn images count for nothing. A signed case keeps the AI finding its report
        recorded: a result arriving after the signature does not change what the worklist shows.

        The case row is locked first, so two workers finishing jobs of one case at once cannot
        store a finding computed without the other's result.

        Also the case's latest shown job (latest_job), signed or not.

        Two statements, a third only when the order changed (the worker calls this once per case
        per stored batch, issue 11): the lock reads the report, the first upload, the department
        and the stored order at once; no savepoint (a failure here fails the caller's transaction
        anyway).
        """
        first_upload = (
            Image.objects.current().filter(case=models.OuterRef("pk")).order_by("uploaded_at").values("uploaded_at")[:1]
        )
        with transaction.atomic(savepoint=False):
            # The report lives in the reviews app, which builds on this one: read it by relation.
            row = (
                Case.objects.select_for_update(of=("self",))
                .filter(pk=self.pk)
                .annotate(first_upload=models.Subquery(first_upload))
                .values_list(
                    "report__id",
                    "report__ai_label",
                    "report__ai_probability",
                    "first_upload",
                    "patient__department_id",
                    "waiting_since",
                    "lead_label",
                    "lead_probability",
                    "latest_job_id",
                )
                .order_by("pk")  # one row: no sort by the model's default order
                .first()
            )
            if row is None:
                return
            report_id, ai_label, ai_probability, self.waiting_since, department_id = row[:5]
            # Only assistive models' results are shown and order the worklist: a silent result
            # never raises a case. (diagnosis.model_status.assistive_q, the department known already.)
            latest: dict[int, InferenceJob] = {}
            last = None
            jobs = InferenceJob.objects.filter(
                models.Exists(job_assistive_deployments(department_id)),
                image__case_id=self.pk,
                image__withdrawn_at__isnull=True,
            )
            for job in jobs.select_related("prediction").order_by("created_at", "id"):
                latest[job.image_id] = last = job
            self.latest_job_id = last.pk if last else None
            if report_id is not None:
                self.lead_label = ai_label
                self.lead_probability = ai_probability
            else:
                lead_job = leading_job(latest.values())
                lead = lead_job.prediction if lead_job else None
                self.lead_label = lead.top_label if lead else ""
                self.lead_probability = lead.top_probability if lead else None
            stored = (self.waiting_since, self.lead_label, self.lead_probability, self.latest_job_id)
            if stored != row[5:]:
                Case.objects.filter(pk=self.pk).update(
                    waiting_since=self.waiting_since,
                    lead_label=self.lead_label,
                    lead_probability=self.lead_probability,
                    latest_job_id=self.latest_job_id,
                )


def _image_path(instance: Image, filename: str) -> str:
    # A random name: the original filename may carry patient identifiers.
    suffix = PurePath(filename).suffix.lower()[:10]
    return f"images/{timezone.now():%Y/%m}/{uuid.uuid4().hex}{suffix}"


class ImageQuerySet(models.QuerySet):
    def current(self) -> ImageQuerySet:
        """Images not withdrawn: what pages, the worklist, the API and reports show."""
        return self.filter(withdrawn_at__isnull=True)


class Image(models.Model):
    class Format(models.TextChoices):
        PNG = "PNG", "PNG"
        JPEG = "JPEG", "JPEG"
        DICOM = "DICOM", "DICOM"

    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="images")
    # "Image 2" everywhere (pages, API, PDF) means the case's second upload, not a database id.
    # Set once, in upload order, and never reused: a withdrawn image keeps its number, so an
    # impression or an audit entry that names "image 3" keeps naming the same picture.
    position = models.PositiveIntegerField(editable=False, help_text="1, 2, 3... in upload order within the case")
    # Which model classifies this image. The case's modality, except when a user confirms that a
    # DICOM of another modality (a CT slice in an X-ray case) goes to that modality's model.
    modality = models.CharField(max_length=8, choices=Modality.choices)
    file = models.FileField(upload_to=_image_path, max_length=255)
    original_name = models.CharField(max_length=255, blank=True)
    sha256 = models.CharField(max_length=64, db_index=True)
    size_bytes = models.PositiveBigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=8, choices=Format.choices)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    uploaded_at = models.DateTimeField(default=timezone.now)
    # DICOM uploads: `file` keeps the original object (private, never sent to browsers); `rendered`
    # is the 8-bit greyscale PNG made from its pixel data (rescale, VOI LUT or window, MONOCHROME1
    # inverted, the chosen frame), which pages show and the worker classifies.
    rendered = models.FileField(upload_to=_image_path, max_length=255, blank=True)
    frame_index = models.PositiveIntegerField(null=True, blank=True, help_text="chosen frame of a multi-frame DICOM")
    sop_instance_uid = models.CharField(max_length=64, blank=True, db_index=True)
    dicom = models.JSONField(
        default=dict,
        blank=True,
        help_text="DICOM header fields read at upload: modality, body part, view position, patient id/name/"
        "birth date, study date, study/series UIDs, photometric interpretation, window used",
    )
    # A mistaken upload is withdrawn, never deleted: the row and the file stay (retention rules
    # decide about the file), pages, the worklist, the API and reports stop showing it.
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawn_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    withdrawal_reason = models.TextField(blank=True)

    objects = ImageQuerySet.as_manager()

    class Meta:
        ordering = ["uploaded_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["case", "position"], name="unique_image_position_per_case"),
        ]

    def __str__(self) -> str:
        return f"Image {self.position or '?'} of case {self.case_id}"

    def save(self, *args, **kwargs) -> None:
        if self.position is None and self.case_id is not None:
            # The upload service holds the case row lock here, so two uploads cannot take the
            # same number; the unique constraint guards any other writer.
            last = Image.objects.filter(case_id=self.case_id).aggregate(last=models.Max("position"))["last"]
            self.position = (last or 0) + 1
        super().save(*args, **kwargs)

    def clean(self) -> None:
        """The Django admin's check (uploads check the same under the case row lock): a signed
        case's images are frozen, so none is added to it, moved into it or out of it."""
        super().clean()
        before = (
            None if self._state.adding else Image.objects.filter(pk=self.pk).values_list("case_id", flat=True).first()
        )
        if before == self.case_id:
            return
        touched = [case_id for case_id in (before, self.case_id) if case_id is not None]
        if Case.objects.filter(pk__in=touched, report__isnull=False).exists():
            message = "A signed case's images are frozen: none can be added to it, moved into it or out of it."
            raise ValidationError({"case": ValidationError(message, code="case_signed")})

    @property
    def is_withdrawn(self) -> bool:
        return self.withdrawn_at is not None


class InferenceJob(models.Model):
    """One classification of one image: a small state machine the worker drives.

    PENDING -> RUNNING -> SUCCEEDED | FAILED | REJECTED. `attempt` counts claims; a worker only
    completes the attempt it claimed, so a job re-queued from a dead worker finishes exactly once.
    REJECTED: the input gate refused the image (rejection_code, rejection_reason); no prediction.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected by the input gate"

    class Rejection(models.TextChoices):
        NOT_MEDICAL = "not_medical", "Not a medical greyscale image"
        WRONG_MODALITY = "wrong_modality", "Wrong modality for the model"
        LATERAL_VIEW = "lateral_view", "Lateral view"
        TOO_SMALL = "too_small", "Image too small"
        OUT_OF_DISTRIBUTION = "out_of_distribution", "Unlike the model's training images"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.REJECTED)

    image = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="jobs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempt = models.PositiveIntegerField(default=0)
    model_name = models.CharField(max_length=100, blank=True)
    model_version = models.CharField(max_length=50, blank=True)
    error_message = models.TextField(blank=True)
    rejection_code = models.CharField(max_length=32, choices=Rejection.choices, blank=True)
    rejection_reason = models.TextField(blank=True, help_text="the gate's explanation, for the user")
    gate_scores = models.JSONField(default=dict, blank=True, help_text="the gate's measurements and thresholds")
    created_at = models.DateTimeField(default=timezone.now)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Who runs the current attempt: "<celery hostname> <pid>" of the worker child that claimed it.
    # Lets a redelivered message or the sweeper tell a dead claimer from a live one in seconds
    # instead of waiting for the stale window (services.job_claim, services.jobs_sweep).
    worker = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["status", "queued_at"]),
            # The worklist's "latest job of an image / of a case" (status, finding, status filter).
            models.Index(fields=["image", "-created_at", "-id"], name="job_latest_per_image"),
        ]
        constraints = [
            # Exactly one result per model per image (issue 12): a second succeeded job of the same
            # model for the same image is refused, so the worker cannot store a duplicate prediction.
            models.UniqueConstraint(
                fields=["image", "model_name", "model_version"],
                condition=models.Q(status="succeeded") & ~models.Q(model_name=""),
                name="one_result_per_model_per_image",
            ),
        ]

    def __str__(self) -> str:
        return f"Job {self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    def loaded_department_id(self) -> int | None:
        """The department of the job's image, when image, case and patient are loaded with it
        (the worker's jobs are), else None: no query either way. Listeners of other apps use it
        to skip the joins up to the department (issue 11: one query each per stored result)."""
        if not InferenceJob.image.is_cached(self) or not Image.case.is_cached(self.image):
            return None
        case = self.image.case
        return case.patient.department_id if Case.patient.is_cached(case) else None

    @property
    def queue_wait(self) -> timedelta | None:
        if self.started_at is None:
            return None
        return self.started_at - self.created_at

    @property
    def run_time(self) -> timedelta | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class ModelDeployment(models.Model):
    """One installed model version in one department: silent, assistive or retired.

    A model speaks only where it has been validated: a silent version runs on every upload of its
    modality and its results are stored for local validation but shown to nobody and never used
    for triage; an assistive one is shown and orders the worklist; a retired one no longer runs.
    Rows are created by model_status.deployments_sync (migrate, worker start, `sync_models`); status
    changes go through model_status.deployment_set_status, which keeps the history below.
    """

    class Status(models.TextChoices):
        SILENT = "silent", "Silent"
        ASSISTIVE = "assistive", "Assistive"
        RETIRED = "retired", "Retired"

    ACTIVE = (Status.SILENT, Status.ASSISTIVE)

    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="model_deployments")
    modality = models.CharField(max_length=8, choices=Modality.choices)
    model_name = models.CharField(max_length=100)
    model_version = models.CharField(max_length=50)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SILENT)
    status_since = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["department", "modality", "model_name", "model_version"]
        constraints = [
            models.UniqueConstraint(
                fields=["department", "model_name", "model_version"], name="unique_deployment_per_department"
            ),
            # One voice per modality and department: promoting a version demotes the previous one.
            models.UniqueConstraint(
                fields=["department", "modality"],
                condition=models.Q(status="assistive"),
                name="one_assistive_model_per_department_modality",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_name} {self.model_version} in {self.department}: {self.status}"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE


class ModelStatusChange(models.Model):
    """Append-only history of a deployment's status: who, when, why (audit records it too)."""

    deployment = models.ForeignKey(ModelDeployment, on_delete=models.PROTECT, related_name="changes")
    from_status = models.CharField(
        max_length=16, choices=ModelDeployment.Status.choices, blank=True, help_text="blank: the row was created"
    )
    to_status = models.CharField(max_length=16, choices=ModelDeployment.Status.choices)
    reason = models.TextField()
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    changed_at = models.DateTimeField(default=timezone.now)
    override = models.BooleanField(default=False, help_text="a site admin overrode a refusal (e.g. too few cases)")

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.deployment}: {self.from_status or 'new'} -> {self.to_status}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise ValidationError("The model status history is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError("The model status history is append-only.")


class ModelStartingStatus(models.Model):
    """A site admin's starting status for a model version, used when its deployments are first
    created (all departments, or one): wins over the model folder's recommended_status."""

    model_name = models.CharField(max_length=100)
    model_version = models.CharField(max_length=50)
    department = models.ForeignKey(
        Department,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="empty: every department without its own setting",
    )
    status = models.CharField(max_length=16, choices=ModelDeployment.Status.choices)
    reason = models.TextField()
    set_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    set_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "model starting statuses"
        constraints = [
            # Two partial indexes rather than nulls_distinct=False, which SQLite (command 1) lacks.
            models.UniqueConstraint(
                fields=["model_name", "model_version", "department"],
                condition=models.Q(department__isnull=False),
                name="unique_starting_status_per_department",
            ),
            models.UniqueConstraint(
                fields=["model_name", "model_version"],
                condition=models.Q(department__isnull=True),
                name="unique_starting_status_everywhere",
            ),
        ]

    def __str__(self) -> str:
        where = self.department or "every department"
        return f"{self.model_name} {self.model_version} starts {self.status} in {where}"


class Prediction(models.Model):
    job = models.OneToOneField(InferenceJob, on_delete=models.PROTECT, related_name="prediction")
    probabilities = models.JSONField(help_text="class label -> probability, summing to 1")
    top_label = models.CharField(max_length=64)
    top_probability = models.FloatField()
    model_name = models.CharField(max_length=100)
    model_version = models.CharField(max_length=50)
    # Grad-CAM for top_label, computed in the worker: a private PNG the size of the model input,
    # drawn over the image on the case page and in the PDF report.
    heatmap = models.FileField(upload_to="heatmaps/%Y/%m/", max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.top_label} ({self.top_probability:.0%})"

    def ranked(self) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda item: item[1], reverse=True)


def leading_job(latest_jobs: Iterable[InferenceJob]) -> InferenceJob | None:
    """The case's leading AI finding, given each image's latest job (prediction loaded): among the
    succeeded ones, AI-positive before negative, then the most probable, then the newest.

    One rule for the worklist's stored reading order and for what a radiologist signs against.
    """
    with_result = [
        job
        for job in latest_jobs
        if job.status == InferenceJob.Status.SUCCEEDED and getattr(job, "prediction", None) is not None
    ]
    return max(
        with_result,
        key=lambda job: (
            job.prediction.top_label not in NEGATIVE_FINDINGS,
            job.prediction.top_probability,
            job.created_at,
            job.pk,
        ),
        default=None,
    )
