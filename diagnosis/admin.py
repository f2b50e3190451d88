from django.contrib import admin

from diagnosis.models import Case, Image, InferenceJob, Patient, Prediction


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
