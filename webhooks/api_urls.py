"""/api/v1/webhooks/ (mounted in xnet_site/urls.py ahead of the rest of /api/v1/)."""

from django.urls import path

from webhooks import api

app_name = "webhooks-api"

urlpatterns = [
    path("subscriptions/", api.SubscriptionListView.as_view(), name="subscription-list"),
    path("deliveries/", api.DeliveryListView.as_view(), name="delivery-list"),
]
