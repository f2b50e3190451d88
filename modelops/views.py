"""Pages for department admins (and site admins): the model versions of a department, each
version's local validation and status history, and the promote/demote forms.

Thin: figures come from modelops.selectors, changes go through modelops.services. A refusal by a
rule (threshold, state) re-renders the page with its message and a 409; bad form input re-renders
with the form's errors and a 400; nothing is written in either case.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from accounts.forms import add_service_errors
from accounts.models import Department
from audit import charts
from diagnosis.model_status import assistive_deployment
from diagnosis.models import ModelDeployment
from ml.labels import display_name
from modelops import selectors, services
from modelops.forms import DemoteForm, PromoteForm

DRIFT_WEEKS_SHOWN = 8  # the validation page's weekly table: this week (so far) and the 7 before


class DepartmentNeeded(Exception):
    """A site admin without a department of their own named none (or a wrong one)."""

    def __init__(self, message: str) -> None:
        self.message = message


def _department(request: HttpRequest) -> Department:
    """Department admins: their own department. Site admins: ?department=<id>, else their own."""
    user = request.user
    if user.is_superuser:
        raw = request.GET.get("department", "")
        if raw:
            if not raw.isdigit() or len(raw) > 18:  # a database integer: no overflow into a 500
                raise DepartmentNeeded(f"“{raw[:40]}” is not a department id.")
            department = Department.objects.filter(pk=int(raw)).first()
            if department is None:
                raise DepartmentNeeded(f"No department with id {int(raw)}.")
            return department
        if user.department_id:
            return user.department
        raise DepartmentNeeded("Model statuses are per department: choose one.")
    if not user.is_department_admin:
        raise PermissionDenied("Only department admins see model validation and change model statuses.")
    return user.department


def _choose_department(request: HttpRequest, exc: DepartmentNeeded) -> HttpResponse:
    context = {"message": exc.message, "departments": Department.objects.all(), "path": request.path}
    return render(request, "modelops/choose_department.html", context, status=400)


def _deployment(department: Department, name: str, version: str) -> ModelDeployment:
    deployment = selectors.deployment_for(department_id=department.pk, name=name, version=version)
    if deployment is None:
        raise Http404("No such model version in this department.")
    return deployment


def _query(request: HttpRequest, department: Department) -> str:
    return f"?{urlencode({'department': department.pk})}" if request.user.is_superuser else ""


def _validation_url(request: HttpRequest, deployment: ModelDeployment) -> str:
    url = reverse("modelops:validation", args=[deployment.model_name, deployment.model_version])
    return url + _query(request, deployment.department)


@login_required
@require_GET
def model_list(request: HttpRequest) -> HttpResponse:
    try:
        department = _department(request)
    except DepartmentNeeded as exc:
        return _choose_department(request, exc)
    deployments = selectors.deployments_of(department_id=department.pk)
    context = {"department": department, "deployments": deployments, "query": _query(request, department)}
    return render(request, "modelops/model_list.html", context)


@login_required
@require_GET
def validation(request: HttpRequest, name: str, version: str) -> HttpResponse:
    try:
        department = _department(request)
    except DepartmentNeeded as exc:
        return _choose_department(request, exc)
    return _render(request, _deployment(department, name, version))


def _render(
    request: HttpRequest,
    deployment: ModelDeployment,
    *,
    promote_form: PromoteForm | None = None,
    demote_form: DemoteForm | None = None,
    status: int = 200,
) -> HttpResponse:
    department_id = deployment.department_id
    result = selectors.validation(
        department_id=department_id, name=deployment.model_name, version=deployment.model_version
    )
    assistive = assistive_deployment(department=department_id, modality=deployment.modality)
    compared = None
    if assistive is not None and assistive.pk != deployment.pk:
        compared = selectors.comparison(department_id=department_id, candidate=result, assistive=assistive)
    minimum = settings.XNET_PROMOTION_MIN_SIGNED_PER_CLASS
    label = f"{deployment.model_name} {deployment.model_version}"
    context = {
        "deployment": deployment,
        "department": deployment.department,
        "result": result,
        "assistive": assistive,
        "compared": compared,
        "minimum": minimum,
        "shortfall": services.promotion_shortfall(result, minimum),
        "history": deployment.changes.select_related("changed_by"),
        "alarms": deployment.department.drift_alarms.filter(
            model_name=deployment.model_name, model_version=deployment.model_version
        )[:10],
        "drift_weeks": services.drift_weeks(
            deployment=deployment,
            weeks=services.weeks_to_check(timezone.localdate() + timedelta(days=7), DRIFT_WEEKS_SHOWN),
        ),
        "drift_min_n": settings.XNET_DRIFT_MIN_WEEKLY_N,
        "promote_form": promote_form or PromoteForm(),
        "demote_form": demote_form or DemoteForm(),
        "query": _query(request, deployment.department),
        "matrix_chart": charts.confusion_matrix(
            rows=[display_name(row) for row in result.matrix_rows],
            columns=[display_name(c) for c in result.classes],
            counts=result.matrix,
            title=f"Radiologist versus {label}",
            row_axis="Radiologist",
            column_axis="AI",
        ),
        "calibration_chart": charts.reliability_diagram(result.bins, title=f"Calibration of {label} here"),
    }
    return render(request, "modelops/validation.html", context, status=status)


def _change(request: HttpRequest, name: str, version: str, form_class, action) -> HttpResponse:
    try:
        department = _department(request)
    except DepartmentNeeded as exc:
        return _choose_department(request, exc)
    deployment = _deployment(department, name, version)
    form = form_class(request.POST)
    forms = {"promote_form": form} if form_class is PromoteForm else {"demote_form": form}
    if form.is_valid():
        try:
            action(deployment, form.cleaned_data)
        except services.ModelOpsRefusal as exc:
            messages.error(request, exc.message)
            deployment.refresh_from_db()
            return _render(request, deployment, status=409, **forms)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            deployment.refresh_from_db()
            messages.success(request, f"{deployment.model_name} {deployment.model_version} is {deployment.status} now.")
            return redirect(_validation_url(request, deployment))
    messages.error(request, "The status was not changed: see the form.")
    return _render(request, deployment, status=400, **forms)


@login_required
@require_POST
def promote(request: HttpRequest, name: str, version: str) -> HttpResponse:
    def act(deployment: ModelDeployment, data: dict) -> None:
        services.deployment_promote(
            deployment=deployment,
            user=request.user,
            reason=data["reason"],
            override=data["override"],
            previous_becomes=data["previous_becomes"],
        )

    return _change(request, name, version, PromoteForm, act)


@login_required
@require_POST
def demote(request: HttpRequest, name: str, version: str) -> HttpResponse:
    def act(deployment: ModelDeployment, data: dict) -> None:
        services.deployment_demote(
            deployment=deployment, user=request.user, reason=data["reason"], to_status=data["to_status"]
        )

    return _change(request, name, version, DemoteForm, act)
