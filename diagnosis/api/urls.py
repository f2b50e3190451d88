"""REST API routes under /api/v1/ (names in the `api` namespace)."""

from django.urls import path, re_path

from diagnosis.api import views
from diagnosis.api.errors import not_found
from reviews import api as review_views

app_name = "api"

urlpatterns = [
    path("patients/", views.PatientListView.as_view(), name="patient-list"),
    path("patients/<int:pk>/", views.PatientDetailView.as_view(), name="patient-detail"),
    path("cases/", views.CaseListView.as_view(), name="case-list"),
    path("cases/from-dicom/", views.CaseFromDicomView.as_view(), name="case-from-dicom"),
    path("cases/<int:pk>/", views.CaseDetailView.as_view(), name="case-detail"),
    path("cases/<int:pk>/images/", views.CaseImageUploadView.as_view(), name="case-images"),
    path("images/<int:pk>/", views.ImageDetailView.as_view(), name="image-detail"),
    path("images/<int:pk>/file/", views.ImageFileView.as_view(), name="image-file"),
    path("images/<int:pk>/withdraw/", views.ImageWithdrawView.as_view(), name="image-withdraw"),
    path("jobs/<int:pk>/", views.JobDetailView.as_view(), name="job-detail"),
    path("jobs/<int:pk>/retry/", views.JobRetryView.as_view(), name="job-retry"),
    path("predictions/<int:pk>/", views.PredictionDetailView.as_view(), name="prediction-detail"),
    path("predictions/<int:pk>/heatmap/", views.PredictionHeatmapView.as_view(), name="prediction-heatmap"),
    path("models/", views.InstalledModelListView.as_view(), name="model-list"),
    path("cases/<int:pk>/report/", review_views.CaseReportView.as_view(), name="case-report"),
    path("cases/<int:pk>/report/addenda/", review_views.CaseReportAddendaView.as_view(), name="case-report-addenda"),
    path("cases/<int:pk>/report.pdf", review_views.CaseReportPdfView.as_view(), name="case-report-pdf"),
    # Last: any other address under /api/v1/ is a 404 in the API's error format, not HTML.
    re_path(r"^.*$", not_found),
]
