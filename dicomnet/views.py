"""Department pages: DICOM nodes (admins manage them), the intake log, and resending a delivery."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from dicomnet import selectors, services
from dicomnet.forms import DicomNodeForm


def _require_member(request: HttpRequest) -> None:
    if not request.user.department_id:
        raise PermissionDenied("DICOM nodes belong to a department.")


@login_required
@require_http_methods(["GET", "POST"])
def dicom_page(request: HttpRequest) -> HttpResponse:
    """Nodes of the department and what arrived from them (stored, already stored, refused and why)."""
    _require_member(request)
    form = DicomNodeForm()
    if request.method == "POST":
        if not request.user.is_department_admin:
            raise PermissionDenied("Only department admins manage DICOM nodes.")
        form = DicomNodeForm(request.POST)
        if form.is_valid():
            node = form.save(commit=False)
            try:
                services.node_save(node=node, changed_by=request.user)
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                messages.success(request, f"DICOM node {node} saved.")
                return redirect("dicom_page")
    return render(
        request,
        "dicomnet/dicom_page.html",
        {
            "nodes": selectors.node_list_for_user(user=request.user),
            "events": selectors.intake_events_for_user(user=request.user),
            "form": form,
            "listener": services.listener_address(),
        },
        status=400 if form.errors else 200,
    )


@login_required
@require_POST
def node_delete(request: HttpRequest, node_id: int) -> HttpResponse:
    _require_member(request)
    node = get_object_or_404(selectors.node_list_for_user(user=request.user), pk=node_id)
    services.node_delete(node=node, changed_by=request.user)
    messages.success(request, f"DICOM node {node} removed (disabled if results were sent to it).")
    return redirect("dicom_page")


@login_required
@require_POST
def delivery_resend(request: HttpRequest, delivery_id: int) -> HttpResponse:
    _require_member(request)
    delivery = get_object_or_404(selectors.delivery_list_for_user(user=request.user), pk=delivery_id)
    try:
        services.delivery_resend(delivery=delivery, user=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"{delivery.get_kind_display()} queued to be sent again to {delivery.node}.")
    return redirect("case_detail", delivery.case_id)
