from django.urls import path

from audit import views

urlpatterns = [
    path("", views.event_list, name="audit_log"),
    path("dashboard/", views.dashboard, name="dashboard"),
]
