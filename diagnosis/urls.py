from django.urls import path

from diagnosis import views

urlpatterns = [
    path("", views.worklist, name="worklist"),
    path("patients/", views.patient_list, name="patient_list"),
    path("patients/<int:patient_id>/", views.patient_detail, name="patient_detail"),
    path("cases/new/", views.case_create, name="case_create"),
    path("cases/<int:case_id>/", views.case_detail, name="case_detail"),
    path("cases/<int:case_id>/upload/", views.case_upload, name="case_upload"),
    path("cases/<int:case_id>/status/", views.case_status, name="case_status"),
    path("jobs/<int:job_id>/retry/", views.job_retry, name="job_retry"),
    path("images/<int:image_id>/file/", views.image_file, name="image_file"),
    path("images/<int:image_id>/pixels/", views.image_pixels, name="image_pixels"),
    path("images/<int:image_id>/withdraw/", views.image_withdraw, name="image_withdraw"),
    path("predictions/<int:prediction_id>/heatmap/", views.prediction_heatmap, name="prediction_heatmap"),
    path("models/<str:name>/<str:version>/", views.model_card, name="model_card"),
    path("models/<str:name>/<str:version>/<str:figure>", views.model_card_figure, name="model_card_figure"),
]
