"""Department-admin pages: register webhooks (the secret shows once), deactivate them, and read
the delivery log. Anyone else gets a 403; another department's webhook is a 404."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from accounts.forms import add_service_errors
from webhooks import selectors, services
from webhooks.forms import SubscriptionForm

DELIVERIES_PER_PAGE = 50


def _require_department_admin(request: HttpRequest) -> None:
    if not request.user.is_department_admin:
        raise PermissionDenied("Only department admins manage webhooks.")


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def subscription_list(request: HttpRequest) -> HttpResponse:
    """The department's webhooks and the delivery log; creating one shows its secret once."""
    _require_department_admin(request)
    form = SubscriptionForm(request.POST or None)
    new_subscription = new_secret = None
    if request.method == "POST" and form.is_valid():
        try:
            new_subscription, new_secret = services.subscription_create(created_by=request.user, **form.cleaned_data)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            form = SubscriptionForm()
    deliveries = Paginator(selectors.delivery_list_for_admin(user=request.user), DELIVERIES_PER_PAGE)
    context = {
        "form": form,
        "subscriptions": selectors.subscription_list_for_admin(user=request.user),
        "deliveries": deliveries.get_page(request.GET.get("page")),
        "new_subscription": new_subscription,
        "new_secret": new_secret,
    }
    return render(request, "webhooks/subscription_list.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def subscription_deactivate(request: HttpRequest, subscription_id: int) -> HttpResponse:
    _require_department_admin(request)
    subscription = get_object_or_404(selectors.subscription_list_for_admin(user=request.user), pk=subscription_id)
    services.subscription_deactivate(subscription=subscription, user=request.user)
    messages.success(request, f"Webhook to {subscription.url} deactivated.")
    return redirect("webhook_list")
