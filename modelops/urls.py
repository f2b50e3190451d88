from django.urls import path

from modelops import views

app_name = "modelops"

# Model names and versions are folder names ("xray-mobilenetv2", "2.0.0"): no slash in either.
urlpatterns = [
    path("", views.model_list, name="list"),
    path("<str:name>/<str:version>/validation/", views.validation, name="validation"),
    path("<str:name>/<str:version>/promote/", views.promote, name="promote"),
    path("<str:name>/<str:version>/demote/", views.demote, name="demote"),
]
