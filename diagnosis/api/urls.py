"""REST API routes of diagnosis under /api/v1/ (names in the `api` namespace).

xnet_site/urls.py puts `routes` together with the routes of the apps built on this one (reviews'
report endpoints) in that namespace, with the catch-all 404 last: diagnosis does not import them.
"""

from django.urls import path, re_path

from diagnosis.api import views
from diagnosis.api.errors import not_found

app_name = "api"

routes = [
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
]

# Diagnosis's API on its own (the site's urls add the other apps' routes before the catch-all).
urlpatterns = [*routes, re_path(r"^.*$", not_found)]
