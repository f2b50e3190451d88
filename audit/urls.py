from django.urls import path

from audit import views

urlpatterns = [
    path("", views.event_list, name="audit_log"),
    path("export.csv", views.event_export, name="audit_log_export"),
    path("dashboard/", views.dashboard, name="dashboard"),
]
