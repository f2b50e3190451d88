"""Sign-off pages: sign a case, add an addendum, download the PDF, list disagreements.

Thin adapters: the case comes through the department-scoped selector (another department's case
is a 404), writes go through reviews.services; a refusal re-renders the case page with the
message and a 400 (bad input) or 409 (the case's state), and writes nothing.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.forms import add_service_errors
from diagnosis.views import _case_or_404, _render_case
from reviews import selectors, services
from reviews.forms import AddendumForm, ReportSignForm
from reviews.fragments import SIGNOFF
from reviews.pdf import report_pdf_response
from reviews.services import ReviewConflict

PAGE_SIZE = 25


def _refused(request: HttpRequest, case, exc: ReviewConflict) -> HttpResponse:
    messages.error(request, exc.message)
    return _render_case(request, case, status=409)


@login_required
@require_POST
def report_sign(request: HttpRequest, case_id: int) -> HttpResponse:
    case = _case_or_404(request.user, case_id)
    form = ReportSignForm(request.POST, labels=selectors.class_labels(case=case))
    if form.is_valid():
        try:
            services.report_sign(case=case, signed_by=request.user, **form.service_kwargs())
        except ReviewConflict as exc:
            return _refused(request, case, exc)
        except ValidationError as exc:
            if hasattr(exc, "error_dict") and "agrees_with_ai" in exc.error_dict:
                exc.error_dict["decision"] = exc.error_dict.pop("agrees_with_ai")
            add_service_errors(form, exc)
        else:
            messages.success(request, "Report signed. It is locked now; later changes are addenda.")
            return redirect("case_detail", case_id=case.pk)
    messages.error(request, "The report was not signed: see the sign-off form.")
    return _render_case(request, case, fragment_state={SIGNOFF: {"sign_form": form}}, status=400)


@login_required
@require_POST
def report_addendum(request: HttpRequest, case_id: int) -> HttpResponse:
    case = _case_or_404(request.user, case_id)
    form = AddendumForm(request.POST)
    if form.is_valid():
        try:
            services.addendum_add(case=case, author=request.user, text=form.cleaned_data["text"])
        except ReviewConflict as exc:
            return _refused(request, case, exc)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, "Addendum added to the signed report.")
            return redirect("case_detail", case_id=case.pk)
    if selectors.report_for_case(case=case) is None:
        return _refused(request, case, ReviewConflict(services.NOT_SIGNED_MESSAGE, code="not_signed"))
    messages.error(request, "The addendum was not added: see the addendum form.")
    return _render_case(request, case, fragment_state={SIGNOFF: {"addendum_form": form}}, status=400)


@login_required
@require_GET
def report_pdf(request: HttpRequest, case_id: int) -> HttpResponse:
    case = _case_or_404(request.user, case_id)
    report = selectors.report_for_case(case=case)
    if report is None:
        return _refused(request, case, ReviewConflict(services.NOT_SIGNED_PDF_MESSAGE, code="not_signed"))
    return report_pdf_response(report=report, case=case)


@login_required
@require_GET
def disagreements(request: HttpRequest) -> HttpResponse:
    """Signed cases whose final label differs from the AI's: what to learn from, per department."""
    reports = selectors.disagreement_list(user=request.user)
    page = Paginator(reports, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "reviews/disagreements.html", {"page": page})


@login_required
@require_POST
def report_sign_confirm(request: HttpRequest, case_id: int) -> HttpResponse:
    """The check before signing (issue 13): the sign-off form's button comes here first, and this
    page shows what the report will say, with the form to sign (or correct) it. It writes
    nothing. A form with errors, an agreement with no AI result or a case signed meanwhile is
    answered as report_sign answers it (the same messages, nothing written). A direct POST to
    report_sign (scripts, the API's equivalent) is not forced through this page."""
    case = _case_or_404(request.user, case_id)
    form = ReportSignForm(request.POST, labels=selectors.class_labels(case=case))
    leading = selectors.leading_finding(case=case)
    agrees = form.is_valid() and form.cleaned_data["decision"] == ReportSignForm.AGREE
    if not form.is_valid() or (agrees and leading is None) or selectors.report_for_case(case=case) is not None:
        return report_sign(request, case_id)
    if leading is None:
        form.without_agree()
    context = {"case": case, "form": form, "leading": leading, "agrees": agrees}
    return render(request, "reviews/sign_confirm.html", context)
