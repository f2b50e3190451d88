from django.urls import path

from dicomnet import api, views

# Pages, mounted at /dicom/.
urlpatterns = [
    path("", views.dicom_page, name="dicom_page"),
    path("nodes/<int:node_id>/delete/", views.node_delete, name="dicom_node_delete"),
    path("deliveries/<int:delivery_id>/resend/", views.delivery_resend, name="dicom_delivery_resend"),
]

# DICOMweb, mounted at /dicomweb/.
dicomweb_urlpatterns = [
    path("studies", api.StowView.as_view(), name="dicomweb-stow"),
    path("studies/<str:study_uid>", api.StowView.as_view(), name="dicomweb-stow-study"),
]

# API, mounted at /api/v1/dicom/.
api_urlpatterns = [
    path("deliveries/", api.DeliveryListView.as_view(), name="dicom-delivery-list"),
    path("deliveries/<int:pk>/resend/", api.DeliveryResendView.as_view(), name="dicom-delivery-resend"),
]
