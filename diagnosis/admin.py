from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from diagnosis.model_status import deployment_set_status
from diagnosis.models import (
    Case,
    Image,
    InferenceJob,
    ModelDeployment,
    ModelStartingStatus,
    ModelStatusChange,
    Patient,
    Prediction,
)


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ["mrn", "name", "department", "birth_date", "sex", "created_at"]
    list_filter = ["department", "sex"]
    search_fields = ["mrn", "name"]


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = ["id", "patient", "modality", "created_by", "created_at"]
    list_filter = ["modality", "patient__department"]
    search_fields = ["patient__mrn", "patient__name"]
    raw_id_fields = ["patient"]


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["id", "case", "format", "width", "height", "uploaded_by", "uploaded_at"]
    raw_id_fields = ["case"]
    readonly_fields = ["sha256", "file"]


@admin.register(InferenceJob)
class InferenceJobAdmin(admin.ModelAdmin):
    list_display = ["id", "image", "status", "attempt", "model_name", "model_version", "created_at", "finished_at"]
    list_filter = ["status", "model_name"]
    raw_id_fields = ["image"]


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ["id", "job", "top_label", "top_probability", "model_name", "model_version", "created_at"]
    list_filter = ["top_label", "model_version"]
    raw_id_fields = ["job"]


class DeploymentStatusForm(forms.ModelForm):
    """The site admin's status change: through deployment_set_status (history, audit, demotion of
    the previous assistive version), with a written reason; never a bare field edit."""

    new_status = forms.ChoiceField(choices=[("", "(unchanged)"), *ModelDeployment.Status.choices], required=False)
    reason = forms.CharField(widget=forms.Textarea, required=False, help_text="why (history and audit trail)")

    class Meta:
        model = ModelDeployment
        fields: list[str] = []

    def clean(self) -> dict:
        data = super().clean()
        if data.get("new_status") and data["new_status"] != self.instance.status and not data.get("reason", "").strip():
            raise ValidationError({"reason": "Say why the model's status changes."})
        return data


class ModelStatusChangeInline(admin.TabularInline):
    model = ModelStatusChange
    extra = 0
    can_delete = False
    fields = ["changed_at", "from_status", "to_status", "changed_by", "override", "reason"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ModelDeployment)
class ModelDeploymentAdmin(admin.ModelAdmin):
    form = DeploymentStatusForm
    list_display = ["model_name", "model_version", "modality", "department", "status", "status_since"]
    list_filter = ["status", "modality", "department"]
    readonly_fields = ["department", "modality", "model_name", "model_version", "status", "status_since"]
    fields = [*readonly_fields, "new_status", "reason"]
    inlines = [ModelStatusChangeInline]

    def has_add_permission(self, request) -> bool:
        return False  # rows come from deployments_sync (migrate, worker start, sync_models)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        status = form.cleaned_data.get("new_status")
        if status and status != obj.status:
            # The Django admin is the site admin's: no promotion thresholds, so recorded as an override.
            deployment_set_status(
                deployment=obj,
                status=status,
                changed_by=request.user,
                reason=form.cleaned_data["reason"],
                override=True,
            )


@admin.register(ModelStartingStatus)
class ModelStartingStatusAdmin(admin.ModelAdmin):
    list_display = ["model_name", "model_version", "department", "status", "set_by", "set_at"]
    readonly_fields = ["set_by", "set_at"]

    def save_model(self, request, obj, form, change) -> None:
        obj.set_by = request.user
        super().save_model(request, obj, form, change)
