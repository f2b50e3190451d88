"""FHIR R4 read endpoints: thin DRF views over fhir_api.selectors and fhir_api.resources.

DRF for authentication alone: the API's token authentication (audited) and the session, and its
permission (an active member of a department). Answers are application/fhir+json; every error is
an OperationOutcome with the HTTP status the REST API would give (400, 401, 403, 404, 405, 503).
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.models import AuditEvent
from audit.services import audit_record
from diagnosis.api import errors as api_errors
from diagnosis.models import Patient
from fhir_api import resources, selectors
from reviews.models import Report
from reviews.pdf import render_report_pdf

logger = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
# _format is the FHIR way to ask for a representation: JSON is the only one served.
JSON_FORMATS = {"json", "application/json", FHIR_JSON}
# Reports a search page holds by default and at most: each carries its signed PDF, rendered for
# the request (tens to hundreds of milliseconds each).
SEARCH_PAGE_SIZE = 10
SEARCH_MAX_PAGE_SIZE = 50
PUBLISHED = timezone.now()  # the CapabilityStatement's date: this code's, i.e. the process start
# FHIR issue types by HTTP status (http://hl7.org/fhir/valueset-issue-type.html).
ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    413: "too-costly",
    415: "not-supported",
    429: "throttled",
    503: "transient",
}


class FhirJSONRenderer(JSONRenderer):
    media_type = FHIR_JSON
    format = "json"
    charset = "utf-8"


class AnyAccept(BaseContentNegotiation):
    """FHIR clients send Accept: application/fhir+json, application/json or */*: all get JSON,
    never a 406."""

    def select_parser(self, request, parsers):
        return None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def _outcome_response(status_code: int, diagnostics: str, code: str | None = None) -> dict:
    return resources.operation_outcome(code=code or ISSUE_CODES.get(status_code, "exception"), diagnostics=diagnostics)


def fhir_exception_handler(exc: Exception, context: dict) -> Response:
    """The API's error handling (statuses, WWW-Authenticate, Retry-After), with the body as an
    OperationOutcome; anything unexpected is logged and answered as a 500 OperationOutcome."""
    response = api_errors.exception_handler(exc, context)
    if response is None:
        logger.exception("FHIR request failed", exc_info=exc)
        message = "The server failed on this request; the error was logged for the administrators."
        return Response(_outcome_response(500, message), status=500)
    error = response.data.get("error", {}) if isinstance(response.data, dict) else {}
    code = "not-supported" if error.get("code") == "not-supported" else None
    response.data = _outcome_response(response.status_code, error.get("message") or "The request failed.", code)
    return response


class FhirView(APIView):
    schema = None  # not in the REST API's OpenAPI schema: FHIR defines these interactions itself
    renderer_classes = [FhirJSONRenderer]
    content_negotiation_class = AnyAccept
    parser_classes: list = []
    allowed_parameters: tuple[str, ...] = ()

    def get_exception_handler(self):
        return fhir_exception_handler

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)  # authentication and permission first
        query = request.query_params
        for name in query:
            values = query.getlist(name)
            if name != "_format" and name not in self.allowed_parameters:
                known = ", ".join(self.allowed_parameters) or "none"
                raise exceptions.ValidationError(
                    f"Unknown parameter '{name}': this endpoint takes {known} (and _format=json).", code="not-supported"
                )
            if len(values) != 1:
                raise exceptions.ValidationError(f"Parameter '{name}' is repeated; give it once.")
            if not values[0].strip():
                raise exceptions.ValidationError(f"Parameter '{name}' is blank.")
        if "_format" in query and query["_format"] not in JSON_FORMATS:
            raise exceptions.NotAcceptable("Only JSON is served (_format=json or application/fhir+json).")

    def base_url(self) -> str:
        return self.request.build_absolute_uri(reverse("fhir:base"))

    def audit(self, action: str, object_type: str, object_id: int, **detail) -> None:
        """FHIR reads are patient-data reads: recorded like the pages' and the API's (the audit
        middleware knows those by URL name; these record themselves)."""
        audit_record(
            action=action,
            actor=self.request.user,
            object_type=object_type,
            object_id=object_id,
            detail={"status": 200, "via": "fhir", **detail},
            request=self.request._request,
        )

    def diagnostic_report(self, report: Report) -> dict:
        # The resource carries the signed PDF: a report download, recorded against the case as
        # the report page's and the API's downloads are.
        self.audit(AuditEvent.Action.REPORT_DOWNLOAD, "case", report.case_id, report=report.pk)
        case = selectors.case_for_pdf(user=self.request.user, report=report)
        pdf = render_report_pdf(report=report, case=case)
        return resources.diagnostic_report(
            report=report, case=case, pdf=pdf, with_ai=selectors.ai_finding_shown(report)
        )


class Metadata(FhirView):
    """The CapabilityStatement: public, as FHIR clients read it before they authenticate."""

    authentication_classes: list = []
    permission_classes: list = []

    def get(self, request: Request) -> Response:
        return Response(resources.capability_statement(base_url=self.base_url(), published=PUBLISHED))


class PatientRead(FhirView):
    def get(self, request: Request, patient_id: int) -> Response:
        try:
            patient = selectors.patient(user=request.user, patient_id=patient_id)
        except Patient.DoesNotExist:
            raise exceptions.NotFound(f"Patient/{patient_id} is not known.") from None
        self.audit(AuditEvent.Action.PATIENT_VIEW, "patient", patient.pk)
        return Response(resources.patient_resource(patient))


class DiagnosticReportRead(FhirView):
    def get(self, request: Request, report_id: int) -> Response:
        try:
            report = selectors.signed_report(user=request.user, report_id=report_id)
        except Report.DoesNotExist:
            raise exceptions.NotFound(f"DiagnosticReport/{report_id} is not known.") from None
        return Response(self.diagnostic_report(report))


class DiagnosticReportSearch(FhirView):
    """?patient=<id> (or Patient/<id>): that patient's signed reports, newest first, with the
    Patient as an included entry. Another department's patient finds nothing, as an unknown one.

    Paged: _count reports a page (each carries its PDF, rendered per request), _page from 1;
    the Bundle's total counts them all and its next/previous links walk the pages."""

    allowed_parameters = ("patient", "_count", "_page")

    def _whole_number(self, name: str, default: int, maximum: int | None = None) -> int:
        value = self.request.query_params.get(name)
        if value is None:
            return default
        if not value.isdigit() or int(value) < 1 or (maximum is not None and int(value) > maximum):
            limit = f" up to {maximum}" if maximum is not None else ""
            raise exceptions.ValidationError(f"{name} must be a whole number from 1{limit}, not '{value[:32]}'.")
        return int(value)

    def _link(self, relation: str, page: int) -> dict:
        query = self.request.query_params.copy()
        query["_page"] = str(page)
        return {"relation": relation, "url": self.request.build_absolute_uri(f"?{query.urlencode()}")}

    def get(self, request: Request) -> Response:
        value = request.query_params.get("patient")
        if value is None:
            raise exceptions.ValidationError("Give ?patient=<id>: reports are searched by patient.")
        reference = value.removeprefix("Patient/")
        if not reference.isdigit() or len(reference) > 18:
            raise exceptions.ValidationError(f"patient must be a Patient id (123 or Patient/123), not '{value[:64]}'.")
        count = self._whole_number("_count", SEARCH_PAGE_SIZE, SEARCH_MAX_PAGE_SIZE)
        page = self._whole_number("_page", 1)
        found = selectors.signed_reports(user=request.user).filter(case__patient_id=int(reference))
        total = found.count()
        reports = list(found[(page - 1) * count : page * count])
        entries: list[tuple[dict, str]] = [(self.diagnostic_report(report), "match") for report in reports]
        if reports:
            entries.append((resources.patient_resource(reports[0].case.patient), "include"))
            self.audit(AuditEvent.Action.PATIENT_VIEW, "patient", reports[0].case.patient_id)
        links = [{"relation": "self", "url": request.build_absolute_uri()}]
        if page * count < total:
            links.append(self._link("next", page + 1))
        if page > 1:
            links.append(self._link("previous", page - 1))
        bundle = resources.search_bundle(entries=entries, total=total, links=links, base_url=self.base_url())
        return Response(bundle)


@csrf_exempt  # it changes nothing
def not_found(request: HttpRequest, *args, **kwargs) -> JsonResponse:
    """Any other address under /fhir/ (another resource type, an interaction not served)."""
    outcome = _outcome_response(404, "This FHIR server serves Patient and DiagnosticReport reads and search only.")
    return JsonResponse(outcome, status=404, content_type=FHIR_JSON)
