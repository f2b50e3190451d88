"""FHIR R4 addresses under /fhir/ (xnet_site/urls.py); anything else there is an OperationOutcome 404."""

from django.urls import path, re_path

from fhir_api import views

app_name = "fhir"

urlpatterns = [
    path("", views.not_found, name="base"),
    path("metadata", views.Metadata.as_view(), name="metadata"),
    path("Patient/<int:patient_id>", views.PatientRead.as_view(), name="patient"),
    path("DiagnosticReport", views.DiagnosticReportSearch.as_view(), name="diagnosticreport-search"),
    path("DiagnosticReport/<int:report_id>", views.DiagnosticReportRead.as_view(), name="diagnosticreport"),
    re_path(r"^.*$", views.not_found),
]
