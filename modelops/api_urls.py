"""/api/v1/model-statuses/ (mounted by xnet_site/urls.py before the rest of /api/v1/)."""

from django.urls import path

from modelops import api

app_name = "modelops-api"

urlpatterns = [
    path("", api.ModelStatusListView.as_view(), name="model-status-list"),
]
