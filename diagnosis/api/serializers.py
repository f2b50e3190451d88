"""Input and output shapes of the REST API.

Input serializers only validate; the services in diagnosis.services do the writes. Output
serializers read objects the selectors fetched (department-scoped, related rows prefetched),
so they never query per row.
"""

from __future__ import annotations

from datetime import date

from django.core.exceptions import ObjectDoesNotExist
from django.core.validators import RegexValidator
from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from diagnosis import selectors
from diagnosis.forms import CaseCreateForm
from diagnosis.models import Case, Image, InferenceJob, Modality, Patient, Prediction

# Errors ------------------------------------------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    status = serializers.IntegerField(help_text="The HTTP status code.")
    code = serializers.CharField(help_text="A short machine-readable code, e.g. `not_found` or `too_large`.")
    message = serializers.CharField(help_text="A sentence for a person.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Messages per input field; empty when the error concerns no field.",
    )


class ErrorSerializer(serializers.Serializer):
    """The body of every error response."""

    error = ErrorDetailSerializer()


# Inputs ------------------------------------------------------------------------------------


class InputSerializer(serializers.Serializer):
    """Base of every request body: a field the endpoint does not know is an error, not dropped.

    A client that sends `date_of_birth` for `birth_date` must hear about it; silently ignoring it
    would register the patient without a birth date and answer 201. Query parameters use the
    same rule (diagnosis.api.filters.QueryParameters).
    """

    unknown_kind = "field"
    unknown_code = "unknown_field"
    also_accepted: tuple[str, ...] = ()  # names that another part of DRF reads (`page`, `format`)

    def to_internal_value(self, data):
        refused = self.refused(data) if hasattr(data, "keys") else {}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:  # one answer names every problem
            if refused and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **refused}) from exc
            raise
        if refused:
            raise serializers.ValidationError(refused)
        return value

    def refused(self, data) -> dict[str, list[ErrorDetail]]:
        """What DRF lets through: names the endpoint does not know, and in a JSON body values of
        another JSON type than the schema's (DRF reads 0 as "0" for a text and "yes" as true)."""
        accepted = [name for name, field in self.fields.items() if not field.read_only] + list(self.also_accepted)
        message = f"Unknown {self.unknown_kind}; this endpoint accepts {', '.join(accepted) or 'none'}."
        errors = {name: [ErrorDetail(message, code=self.unknown_code)] for name in sorted(set(data) - set(accepted))}
        if not hasattr(data, "getlist"):  # JSON; every value of a form or a query string is text
            for name, field in self.fields.items():
                wrong = data.get(name) is not None and _json_type_error(field, data[name])
                if wrong:
                    errors[name] = [ErrorDetail(wrong, code="invalid")]
        return errors


class InputSerializerSchema(OpenApiSerializerExtension):
    """In the schema, a request body takes no other properties: a client, and schemathesis,
    reads that unknown fields are refused, as they are (400 unknown_field)."""

    target_class = InputSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema, direction) -> dict:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}


def _json_type_error(field: serializers.Field, value: object) -> str | None:
    """DRF's own message when `value` is not of the field's JSON type, else None."""
    if isinstance(field, serializers.BooleanField):
        return None if isinstance(value, bool) else "Must be a valid boolean."
    if isinstance(field, serializers.IntegerField | serializers.PrimaryKeyRelatedField):
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        return None if whole and not isinstance(value, bool) else "A valid integer is required."
    if isinstance(field, serializers.FloatField):
        return None if isinstance(value, int | float) and not isinstance(value, bool) else "A valid number is required."
    text = serializers.CharField | serializers.ChoiceField | serializers.DateField | serializers.DateTimeField
    if isinstance(field, text):
        return None if isinstance(value, str) else "Not a valid string."
    return None


# The new-case page's limit, so the API stores nothing the page could not.
INDICATION_MAX_LENGTH = CaseCreateForm.base_fields["indication"].max_length
# DRF trims strings, so one of spaces only is blank and refused; the pattern puts that in the
# schema (minLength 1 alone lets a client, and schemathesis, believe "  " is accepted).
NOT_BLANK = RegexValidator(r"\S", message="This field may not be blank.", code="blank")


# Patients ----------------------------------------------------------------------------------


class PatientSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:patient-detail")

    class Meta:
        model = Patient
        fields = ["id", "url", "mrn", "name", "birth_date", "sex", "created_at"]
        read_only_fields = fields


class PatientCreateSerializer(InputSerializer):
    mrn = serializers.CharField(
        max_length=64, validators=[NOT_BLANK], help_text="Medical record number, unique in your department."
    )
    name = serializers.CharField(max_length=200, validators=[NOT_BLANK])
    birth_date = serializers.DateField(required=False, allow_null=True, help_text="Not in the future.")
    sex = serializers.ChoiceField(choices=Patient.Sex.choices, default=Patient.Sex.UNKNOWN)

    def validate_mrn(self, mrn: str) -> str:
        # The database constraint is the final guard; this check names the field for the client.
        user = self.context["request"].user
        if selectors.patient_list_for_user(user=user).filter(mrn=mrn).exists():
            raise serializers.ValidationError("A patient with this MRN is already registered in your department.")
        return mrn

    def validate_birth_date(self, birth_date: date | None) -> date | None:
        if birth_date is not None and birth_date > timezone.localdate():
            raise serializers.ValidationError("A birth date cannot be in the future.", code="future")
        return birth_date


# Predictions and jobs ----------------------------------------------------------------------


class ModelCardUrlField(serializers.Field):
    """The web page of the model card (metrics, intended use, limits) of the object's model."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("source", "*")
        kwargs.setdefault("read_only", True)
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("help_text", "The model card page (how far to trust the model); null before a model ran.")
        super().__init__(**kwargs)

    def to_representation(self, instance) -> str | None:
        if not instance.model_name or not instance.model_version:
            return None
        path = reverse("model_card", args=[instance.model_name, instance.model_version])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


extend_schema_field({"type": "string", "format": "uri", "nullable": True})(ModelCardUrlField)


class ModelStatusSerializer(serializers.Serializer):
    """Issue 12: the shown result's model status in the department and what it rests on."""

    status = serializers.ChoiceField(choices=["assistive"], help_text="Only assistive models' results are shown.")
    since = serializers.DateField()
    evidence = serializers.CharField(
        help_text="One line: e.g. 'assistive since 2026-12-10, validated on 212 signed cases here: agreement 88 %'."
    )
    validation_url = serializers.CharField(help_text="The model version's validation page (department admins).")


def _model_status(job: InferenceJob) -> dict | None:
    from diagnosis.model_status import job_evidence_json

    return job_evidence_json(job)


class PredictionSerializer(serializers.ModelSerializer):
    probabilities = serializers.DictField(child=serializers.FloatField(), help_text="Class label -> probability.")
    model_card_url = ModelCardUrlField()
    heatmap_url = serializers.SerializerMethodField(
        help_text="Grad-CAM of the top class: a transparent PNG the size of the model input, to draw stretched "
        "over the image (null for predictions made before heatmaps)."
    )

    @extend_schema_field({"type": "string", "format": "uri", "nullable": True})
    def get_heatmap_url(self, prediction: Prediction) -> str | None:
        if not prediction.heatmap:
            return None
        url = reverse("api:prediction-heatmap", kwargs={"pk": prediction.pk})
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url

    class Meta:
        model = Prediction
        fields = [
            "id",
            "probabilities",
            "top_label",
            "top_probability",
            "model_name",
            "model_version",
            "model_card_url",
            "heatmap_url",
            "created_at",
        ]
        read_only_fields = fields


class PredictionDetailSerializer(PredictionSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:prediction-detail")
    image = serializers.IntegerField(source="job.image_id", read_only=True)
    case = serializers.IntegerField(source="job.image.case_id", read_only=True)
    model_status = serializers.SerializerMethodField(help_text="The model's status in this department (issue 12).")

    @extend_schema_field(ModelStatusSerializer(allow_null=True))
    def get_model_status(self, prediction: Prediction) -> dict | None:
        return _model_status(prediction.job)

    class Meta(PredictionSerializer.Meta):
        fields = ["id", "url", "job", "image", "case", *PredictionSerializer.Meta.fields[1:], "model_status"]
        read_only_fields = fields


class BlankAsNullChoiceField(serializers.ChoiceField):
    """A model's optional choice (stored as "") written as null: "" is outside the enum the
    schema promises, so clients validating against it failed on every job without one."""

    def __init__(self, **kwargs) -> None:
        super().__init__(read_only=True, allow_null=True, **kwargs)

    def to_representation(self, value: str) -> str | None:
        return value or None


class JobSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:job-detail")
    model_status = serializers.SerializerMethodField(
        help_text="The model's status in this department and its evidence; every job shown is an assistive "
        "model's (silent models' results are stored for validation, never shown)."
    )

    @extend_schema_field(ModelStatusSerializer(allow_null=True))
    def get_model_status(self, job: InferenceJob) -> dict | None:
        return _model_status(job)

    rejection_code = BlankAsNullChoiceField(
        choices=InferenceJob.Rejection.choices, help_text="Why the input gate refused the image; null otherwise."
    )
    model_card_url = ModelCardUrlField()
    case = serializers.IntegerField(source="image.case_id", read_only=True)
    # allow_null: a job without a prediction yet reads as null (the reverse one-to-one raises
    # RelatedObjectDoesNotExist, which DRF turns into None for nullable fields).
    prediction = PredictionSerializer(read_only=True, allow_null=True)

    class Meta:
        model = InferenceJob
        fields = [
            "id",
            "url",
            "image",
            "case",
            "status",
            "attempt",
            "model_name",
            "model_version",
            "model_card_url",
            "model_status",
            "error_message",
            "rejection_code",
            "rejection_reason",
            "gate_scores",
            "created_at",
            "queued_at",
            "started_at",
            "finished_at",
            "prediction",
        ]
        read_only_fields = fields


# Images ------------------------------------------------------------------------------------


class ImageSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:image-detail")
    file = serializers.HyperlinkedIdentityField(
        view_name="api:image-file",
        help_text="Streams the stored image (same authentication); for a DICOM, the PNG rendered from it.",
    )
    modality = serializers.ChoiceField(
        choices=Modality.choices, read_only=True, help_text="Which model classifies this image."
    )
    frame = serializers.SerializerMethodField(help_text="The classified frame of a multi-frame DICOM (from 1).")
    position = serializers.IntegerField(
        read_only=True,
        help_text="The image's number in its case (1, 2, 3... in upload order), as pages and the PDF report "
        "name it; a withdrawn image keeps its number and is not listed.",
    )
    dicom = serializers.DictField(
        read_only=True,
        help_text="DICOM header fields read at upload (modality, body part, view position, patient, study, UIDs, "
        "window used); empty for PNG and JPEG.",
    )

    class Meta:
        model = Image
        fields = [
            "id",
            "url",
            "case",
            "position",
            "file",
            "original_name",
            "format",
            "modality",
            "width",
            "height",
            "size_bytes",
            "sha256",
            "frame",
            "sop_instance_uid",
            "dicom",
            "uploaded_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_frame(self, image: Image) -> int | None:
        return None if image.frame_index is None else image.frame_index + 1


class ImageWithJobsSerializer(ImageSerializer):
    jobs = JobSerializer(
        many=True, read_only=True, help_text="Jobs of the department's assistive model (silent models' are not shown)."
    )
    no_result = serializers.SerializerMethodField(
        help_text="Why no AI result is shown for this image (e.g. no validated model for its modality in this "
        "department: images are stored for reading); null when a job is shown."
    )

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_no_result(self, image: Image) -> str | None:
        from diagnosis.templatetags.xnet import no_model_message

        return None if image.jobs.all() else no_model_message(image)

    class Meta(ImageSerializer.Meta):
        fields = [*ImageSerializer.Meta.fields, "jobs", "no_result"]
        read_only_fields = fields


@extend_schema_field({"type": "string", "format": "binary"})
class UploadedFileField(serializers.FileField):
    """A file part of a multipart form (drf-spectacular documents FileField as a URI string)."""


class ImageUploadSerializer(InputSerializer):
    # Empty files pass here so that the upload inspection answers with its own message.
    file = UploadedFileField(allow_empty_file=True, help_text="A PNG, JPEG or DICOM chest image.")
    # No allow_null on form fields: a multipart form cannot send null (a blank one is left out).
    frame = serializers.IntegerField(
        required=False, min_value=1, help_text="Multi-frame DICOM: the frame to classify, from 1."
    )
    confirm_modality = serializers.BooleanField(
        default=False,
        help_text="A DICOM of the other modality (CT in an X-ray case, or the reverse) is classified by its own "
        "modality's model; without this it is refused.",
    )


class ImageWithdrawSerializer(InputSerializer):
    reason = serializers.CharField(
        max_length=2000,
        validators=[NOT_BLANK],
        help_text="Why the image is withdrawn (a mistaken upload); kept in the audit trail.",
    )


class DicomCaseCreateSerializer(ImageUploadSerializer):
    """A new case from one DICOM: the patient is taken from it (PatientID = record number)."""

    file = UploadedFileField(allow_empty_file=True, help_text="A DICOM chest X-ray (CR/DX) or CT image.")
    modality = serializers.ChoiceField(
        choices=Modality.choices,
        required=False,
        help_text="The case's modality; by default the DICOM's (needed for OT/SC objects).",
    )
    indication = serializers.CharField(required=False, allow_blank=True, default="", max_length=INDICATION_MAX_LENGTH)


class UploadResultSerializer(serializers.Serializer):
    """The 202 answer to an upload: the stored image and the job of the department's assistive model
    that will classify it (null where none is assistive: `note` says so)."""

    image = ImageSerializer()
    job = JobSerializer(allow_null=True)
    note = serializers.CharField(allow_null=True, required=False, help_text="Why no job is shown; null otherwise.")


class DicomCaseResultSerializer(UploadResultSerializer):
    """The 201 answer to a case created from a DICOM: the case's URL, the image and its job."""

    case = serializers.URLField(help_text="The new case (also in the Location header).")


# Cases -------------------------------------------------------------------------------------


def _latest_job(case: Case) -> InferenceJob | None:
    jobs = [job for image in case.images.all() for job in image.jobs.all()]
    return max(jobs, key=lambda job: (job.created_at, job.pk), default=None)


class ReportSummarySerializer(serializers.Serializer):
    """The case's signed report in brief; the full report is at `url`."""

    url = serializers.URLField()
    final_label = serializers.CharField(help_text="The radiologist's finding: a class label or 'other'.")
    agrees_with_ai = serializers.BooleanField()
    signed_by = serializers.CharField()
    signed_at = serializers.DateTimeField()


class CaseSerializer(serializers.ModelSerializer):
    """A case with a summary of its latest job.

    The list reads the summary from the worklist's annotations (one query for the page); the
    detail view computes it from the images and jobs it prefetched anyway.
    """

    url = serializers.HyperlinkedIdentityField(view_name="api:case-detail")
    patient_mrn = serializers.CharField(source="patient.mrn", read_only=True)
    patient_name = serializers.CharField(source="patient.name", read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True)
    status = serializers.SerializerMethodField(help_text="Status of the latest job; null before any upload.")
    top_label = serializers.SerializerMethodField(help_text="Top finding of the latest job, once it succeeded.")
    top_probability = serializers.SerializerMethodField()
    report = serializers.SerializerMethodField(help_text="The signed report in brief; null until the case is signed.")
    patient_sex = serializers.CharField(source="patient.sex", read_only=True, help_text="F, M, O or U (unknown).")
    patient_birth_date = serializers.DateField(source="patient.birth_date", read_only=True, allow_null=True)
    image_count = serializers.SerializerMethodField(help_text="Images of the case (withdrawn ones not counted).")
    waiting_since = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="The first upload: the case waits for reading from then."
    )

    class Meta:
        model = Case
        fields = [
            "id",
            "url",
            "patient",
            "patient_mrn",
            "patient_name",
            "patient_sex",
            "patient_birth_date",
            "modality",
            "indication",
            "created_by",
            "created_at",
            "image_count",
            "waiting_since",
            "status",
            "top_label",
            "top_probability",
            "report",
        ]
        read_only_fields = fields

    def get_image_count(self, case: Case) -> int:
        # The list counts in the worklist query; the detail counts the images it prefetched.
        if hasattr(case, "image_count"):
            return case.image_count or 0
        return len(case.images.all())

    @extend_schema_field(ReportSummarySerializer(allow_null=True))
    def get_report(self, case: Case) -> dict | None:
        # The list selects the report with the case (worklist); the detail reads it here.
        try:
            report = case.report
        except ObjectDoesNotExist:
            return None
        path = reverse("api:case-report", args=[case.pk])
        request = self.context.get("request")
        return {
            "url": request.build_absolute_uri(path) if request else path,
            "final_label": report.final_label,
            "agrees_with_ai": report.agrees_with_ai,
            "signed_by": report.signed_by.username,
            "signed_at": serializers.DateTimeField().to_representation(report.signed_at),
        }

    def _summary(self, case: Case) -> tuple[str | None, str | None, float | None]:
        if hasattr(case, "latest_status"):
            return case.latest_status, case.latest_top_label, case.latest_top_probability
        job = _latest_job(case)
        if job is None:
            return None, None, None
        prediction = getattr(job, "prediction", None) if job.status == InferenceJob.Status.SUCCEEDED else None
        return job.status, getattr(prediction, "top_label", None), getattr(prediction, "top_probability", None)

    @extend_schema_field(serializers.ChoiceField(choices=InferenceJob.Status.choices, allow_null=True))
    def get_status(self, case: Case) -> str | None:
        return self._summary(case)[0]

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_top_label(self, case: Case) -> str | None:
        return self._summary(case)[1]

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_top_probability(self, case: Case) -> float | None:
        return self._summary(case)[2]


class CaseDetailSerializer(CaseSerializer):
    images = ImageWithJobsSerializer(many=True, read_only=True)

    class Meta(CaseSerializer.Meta):
        fields = [*CaseSerializer.Meta.fields, "images"]
        read_only_fields = fields


@extend_schema_field({"type": "integer", "minimum": 1})
class DepartmentPatientField(serializers.PrimaryKeyRelatedField):
    """A patient id, looked up among the requesting user's department only.

    The id must be a whole number: DRF's related field handed 1.5 to the database lookup, which
    truncated it and found patient 1.
    """

    default_error_messages = {"does_not_exist": "Unknown patient."}

    def get_queryset(self) -> QuerySet[Patient]:
        return selectors.patient_list_for_user(user=self.context["request"].user)

    def to_internal_value(self, data) -> Patient:
        if isinstance(data, bool):  # True is an int to Python, not an id to a client
            self.fail("incorrect_type", data_type=type(data).__name__)
        return super().to_internal_value(serializers.IntegerField(min_value=1).run_validation(data))


class CaseCreateSerializer(InputSerializer):
    # The queryset is only a type hint for the schema; lookups go through get_queryset.
    patient = DepartmentPatientField(queryset=Patient.objects.none(), help_text="Patient id.")
    modality = serializers.ChoiceField(choices=Modality.choices)
    indication = serializers.CharField(required=False, allow_blank=True, default="", max_length=INDICATION_MAX_LENGTH)


# Installed models --------------------------------------------------------------------------


class InstalledModelSerializer(serializers.Serializer):
    """An installed model folder (ml.registry.ModelSpec) and the figures of its model.json."""

    name = serializers.CharField()
    version = serializers.CharField()
    modality = serializers.ChoiceField(choices=Modality.choices)
    classes = serializers.ListField(child=serializers.CharField())
    input_size = serializers.SerializerMethodField(help_text="[width, height] in pixels.")
    calibration_temperature = serializers.FloatField(source="temperature")
    architecture = serializers.CharField(source="card.architecture", default="")
    pretrained = serializers.BooleanField(source="card.pretrained", default=False)
    intended_use = serializers.CharField(source="card.intended_use", default="")
    limitations = serializers.ListField(child=serializers.CharField(), source="card.limitations", default=list)
    metrics = serializers.DictField(help_text="As model.json records them: test-split figures with 95 % intervals.")
    external_validation = serializers.CharField(
        source="card.external_validation",
        default="",
        help_text='"leave one source out", "none" (one source of images only), or empty for older models.',
    )
    leave_one_source_out = serializers.DictField(
        source="card.leave_one_source_out",
        default=None,
        allow_null=True,
        help_text="Per held-out source: normals called normal, sensitivities with Wilson 95 % intervals, ECE, "
        "gate refusals, Grad-CAM share on the border (training.crossval).",
    )
    card_url = serializers.SerializerMethodField(help_text="The model card's web page.")

    def get_input_size(self, spec) -> list[int]:
        return [spec.preprocessing.width, spec.preprocessing.height]

    def get_card_url(self, spec) -> str:
        path = reverse("model_card", args=[spec.name, spec.version])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path
