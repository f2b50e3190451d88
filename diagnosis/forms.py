"""Forms for the server-rendered pages. They validate input and look objects up through the
department-scoped selectors; the writes happen in diagnosis.services."""

from __future__ import annotations

from django import forms
from django.core.files.uploadedfile import UploadedFile
from django.utils import timezone

from accounts.models import User
from diagnosis import selectors
from diagnosis.models import InferenceJob, Modality, Patient

ACCEPT_IMAGES = "image/png,image/jpeg,application/dicom,.png,.jpg,.jpeg,.dcm,.dicom"
IMAGES_LABEL = "Images (PNG, JPEG or DICOM, one or several)"


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    """One or several files. Whether each one is a usable image is decided by the upload
    service (by content), so an empty file gets the same message on the pages as in the API."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": ACCEPT_IMAGES}))
        kwargs.setdefault("allow_empty_file", True)
        kwargs.setdefault("error_messages", {"required": "Choose at least one image to upload."})
        super().__init__(**kwargs)

    def clean(self, data, initial=None) -> list[UploadedFile]:
        single_clean = super().clean
        if isinstance(data, list | tuple):
            return [single_clean(item, initial) for item in data] if data else [single_clean(None, initial)]
        return [single_clean(data, initial)]


def frame_field() -> forms.IntegerField:
    return forms.IntegerField(
        label="Frame (multi-frame DICOM only)",
        required=False,
        min_value=1,
        help_text="Which frame or slice to classify, counting from 1.",
        error_messages={"min_value": "Frames are counted from 1."},
    )


def confirm_modality_field() -> forms.BooleanField:
    return forms.BooleanField(
        label="Use the DICOM's modality",
        required=False,
        help_text="A CT DICOM in an X-ray case (or an X-ray DICOM in a CT case) goes to its own modality's model.",
    )


class ImagesUploadForm(forms.Form):
    images = MultipleImageField(label=IMAGES_LABEL)
    frame = frame_field()
    confirm_modality = confirm_modality_field()


class ImageWithdrawForm(forms.Form):
    reason = forms.CharField(
        label="Reason for withdrawing",
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="For example: uploaded to the wrong case. It goes into the audit trail.",
        error_messages={"required": "Say why the image is withdrawn."},
    )


class WorklistFilterForm(forms.Form):
    STATUS_CHOICES = [("", "Any status"), *InferenceJob.Status.choices, ("none", "No AI job shown")]

    q = forms.CharField(label="Record number or name", required=False, max_length=100)
    status = forms.ChoiceField(label="AI job", choices=STATUS_CHOICES, required=False)
    # Whether a radiologist has signed the case: separate from the AI job's status.
    reading = forms.ChoiceField(
        label="Reading",
        choices=[("", "Signed and unsigned"), ("unsigned", "Unsigned"), ("signed", "Signed")],
        required=False,
    )
    modality = forms.ChoiceField(choices=[("", "Any modality"), *Modality.choices], required=False)
    date_from = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict:
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            self.add_error("date_to", "The end date is before the start date.")
        return data

    def filters(self) -> dict:
        """The selector's keyword arguments from the valid fields only (invalid ones are shown
        as errors and ignored)."""
        data = getattr(self, "cleaned_data", {})
        return {
            "search": data.get("q") or None,
            "status": data.get("status") or None,
            "modality": data.get("modality") or None,
            "date_from": data.get("date_from"),
            "date_to": data.get("date_to"),
            "reading": data.get("reading") or None,
        }


class PatientSearchForm(forms.Form):
    q = forms.CharField(label="Record number or name", required=False, max_length=100)


class CaseCreateForm(forms.Form):
    """A new case for an existing patient (found by record number), a newly registered one, or
    the one the DICOM files name (matched by patient ID, or registered from the DICOM), with its
    first images, in one form."""

    EXISTING = "existing"
    NEW = "new"
    FROM_DICOM = "dicom"

    patient_mode = forms.ChoiceField(
        label="Patient",
        choices=[
            (EXISTING, "Existing patient"),
            (NEW, "Register a new patient"),
            (FROM_DICOM, "From the DICOM files (patient ID)"),
        ],
        initial=EXISTING,
        widget=forms.RadioSelect,
    )
    mrn = forms.CharField(label="Medical record number", max_length=64, required=False)
    name = forms.CharField(label="Full name", max_length=200, required=False)
    birth_date = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    sex = forms.ChoiceField(choices=Patient.Sex.choices, initial=Patient.Sex.UNKNOWN, required=False)
    modality = forms.ChoiceField(
        choices=[*Modality.choices, ("", "As the DICOM says (patient from the DICOM only)")],
        initial=Modality.XRAY,
        required=False,
    )
    indication = forms.CharField(
        label="Clinical indication", required=False, widget=forms.Textarea(attrs={"rows": 3}), max_length=2000
    )
    images = MultipleImageField(label=IMAGES_LABEL)
    frame = frame_field()
    confirm_modality = confirm_modality_field()

    def __init__(self, *args, user: User, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.patient: Patient | None = None

    def clean_birth_date(self):
        birth_date = self.cleaned_data.get("birth_date")
        if birth_date is not None and birth_date > timezone.localdate():
            raise forms.ValidationError("A birth date cannot be in the future.", code="future")
        return birth_date

    def clean(self) -> dict:
        data = super().clean()
        mode, mrn = data.get("patient_mode"), (data.get("mrn") or "").strip()
        if mode != self.FROM_DICOM and "modality" in data and not data["modality"]:
            self.add_error("modality", "Choose the examination's modality.")
        if mode == self.FROM_DICOM:
            return data  # the upload service matches or registers the patient from the files
        if mode and not mrn:
            self.add_error("mrn", "Enter the medical record number.")
        if not mode or not mrn:
            return data
        existing = selectors.patient_list_for_user(user=self.user).filter(mrn=mrn).first()
        if mode == self.EXISTING:
            if existing is None:
                self.add_error(
                    "mrn",
                    f"No patient with record number {mrn} in your department. "
                    "Check the number, or choose “Register a new patient”.",
                )
            self.patient = existing
        else:
            if existing is not None:
                self.add_error(
                    "mrn", f"Record number {mrn} is already registered ({existing.name}); choose “Existing patient”."
                )
            if not (data.get("name") or "").strip():
                self.add_error("name", "Enter the new patient's name.")
        return data
