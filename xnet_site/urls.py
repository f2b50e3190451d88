from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from diagnosis.api import errors as api_errors
from diagnosis.api import urls as diagnosis_api
from dicomnet import urls as dicomnet_urls
from reviews import api as reviews_api

# /api/v1/, namespace "api": each app's routes (reviews builds on diagnosis, which does not import
# it), then any other address under /api/v1/ is a 404 in the API's error format, not HTML.
api_v1 = (
    [
        *diagnosis_api.routes,
        path("cases/<int:pk>/report/", reviews_api.CaseReportView.as_view(), name="case-report"),
        path("cases/<int:pk>/report/addenda/", reviews_api.CaseReportAddendaView.as_view(), name="case-report-addenda"),
        path("cases/<int:pk>/report.pdf", reviews_api.CaseReportPdfView.as_view(), name="case-report-pdf"),
        re_path(r"^.*$", api_errors.not_found),
    ],
    diagnosis_api.app_name,
)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("fhir/", include("fhir_api.urls")),  # FHIR R4 reads of signed reports (application/fhir+json)
    path("webhooks/", include("webhooks.urls")),
    path("api/v1/webhooks/", include("webhooks.api_urls")),  # before the rest of /api/v1/ and its 404
    path("accounts/", include("accounts.urls")),
    path("models/", include("modelops.urls")),  # validation pages, promote/demote (department admins)
    path("api/v1/model-statuses/", include("modelops.api_urls")),  # before the rest of /api/v1/ and its 404
    path("api/v1/dicom/", include(dicomnet_urls.api_urlpatterns)),  # before the rest of /api/v1/ and its 404
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script, so the
    # Content-Security-Policy needs no exception for it.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    # Any other address under /api/ is a JSON 404 for every method, not a page's HTML.
    re_path(r"^api/", api_errors.not_found),
    path("audit/", include("audit.urls")),
    path("dicom/", include("dicomnet.urls")),  # DICOM nodes and intake (department pages)
    path("dicomweb/", include(dicomnet_urls.dicomweb_urlpatterns)),  # STOW-RS
    path("", include("health.urls")),  # /healthz
    path("", include("reviews.urls")),
    path("", include("diagnosis.urls")),
]

# Errors raised outside a DRF view (middleware, URL resolution, unhandled exceptions) answer in
# the API's JSON error shape under /api/ and with the HTML templates elsewhere.
handler400 = "diagnosis.api.errors.bad_request"
handler403 = "diagnosis.api.errors.permission_denied"
handler404 = "diagnosis.api.errors.page_not_found"
handler500 = "diagnosis.api.errors.server_error"
