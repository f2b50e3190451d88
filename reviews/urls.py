"""Sign-off pages. The URL names are fixed: the audit trail logs requests by them."""

from django.urls import path

from reviews import views

urlpatterns = [
    path("cases/<int:case_id>/report/", views.report_sign, name="report_sign"),
    path("cases/<int:case_id>/report/confirm/", views.report_sign_confirm, name="report_sign_confirm"),
    path("cases/<int:case_id>/report/addenda/", views.report_addendum, name="report_addendum"),
    path("cases/<int:case_id>/report.pdf", views.report_pdf, name="report_pdf"),
    path("reviews/disagreements/", views.disagreements, name="disagreements"),
]
