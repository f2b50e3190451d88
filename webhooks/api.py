"""Read-only REST API for department admins: the department's webhooks and their delivery log.

Routes: /api/v1/webhooks/subscriptions/ and /api/v1/webhooks/deliveries/ (xnet_site/urls.py).
The secret is never in an answer (it shows once, on the page that creates the webhook). A user
who is not a department admin gets a 403 in the API's error shape.
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, serializers
from rest_framework.permissions import BasePermission

from diagnosis.api.filters import ListParameters, QueryParameters
from diagnosis.api.permissions import IsDepartmentMember
from diagnosis.api.serializers import ErrorSerializer
from diagnosis.api.views import KnownQueryParameters
from webhooks import selectors
from webhooks.models import Delivery, Subscription

LIST_ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer}


class IsDepartmentAdmin(BasePermission):
    message = "Only department admins can read the department's webhooks."

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_department_admin)


class WebhookSubscriptionSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True)
    events = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Subscription
        fields = ["id", "url", "events", "description", "is_active", "created_by", "created_at", "deactivated_at"]
        read_only_fields = fields


class WebhookDeliverySerializer(serializers.ModelSerializer):
    subscription_url = serializers.CharField(source="subscription.url", read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id",
            "subscription",
            "subscription_url",
            "event",
            "object_key",
            "status",
            "attempts",
            "last_status_code",
            "last_error",
            "next_attempt_at",
            "last_attempt_at",
            "delivered_at",
            "created_at",
        ]
        read_only_fields = fields


class AdminListView(KnownQueryParameters, generics.ListAPIView):
    permission_classes = [IsDepartmentMember, IsDepartmentAdmin]

    def get_query_parameters_class(self) -> type[QueryParameters]:
        return ListParameters


@extend_schema_view(get=extend_schema(responses={200: WebhookSubscriptionSerializer(many=True), **LIST_ERRORS}))
class SubscriptionListView(AdminListView):
    """Your department's webhooks, newest first (department admins only; never the secret)."""

    serializer_class = WebhookSubscriptionSerializer

    def get_queryset(self) -> QuerySet[Subscription]:
        return selectors.subscription_list_for_admin(user=self.request.user)


@extend_schema_view(get=extend_schema(responses={200: WebhookDeliverySerializer(many=True), **LIST_ERRORS}))
class DeliveryListView(AdminListView):
    """Your department's webhook deliveries, newest first: status, attempts, last answer."""

    serializer_class = WebhookDeliverySerializer

    def get_queryset(self) -> QuerySet[Delivery]:
        return selectors.delivery_list_for_admin(user=self.request.user)
