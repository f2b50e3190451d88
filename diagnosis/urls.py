from django.urls import path

from diagnosis import views

urlpatterns = [
    path("", views.worklist, name="worklist"),
]
