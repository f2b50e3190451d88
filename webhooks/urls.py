"""Webhook pages. The URL names are fixed: the audit trail logs requests by them."""

from django.urls import path

from webhooks import views

urlpatterns = [
    path("", views.subscription_list, name="webhook_list"),
    path("<int:subscription_id>/deactivate/", views.subscription_deactivate, name="webhook_deactivate"),
]
