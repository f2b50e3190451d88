"""REST API for sign-off: read or sign a case's report, add addenda, download the PDF.

Routes live in xnet_site/urls.py (namespace "api", beside diagnosis's). The case is found through the
department-scoped selector (another department's case is a 404); refusals use the API's single
error shape: 400 for bad input, 409 when the case's state forbids the action.
"""

from __future__ import annotations

from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.exceptions import APIException, NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from diagnosis.api.serializers import NOT_BLANK, ErrorSerializer, InputSerializer
from diagnosis.api.views import IgnoreAcceptHeader, KnownQueryParameters
from diagnosis.models import Case
from reviews import selectors, services
from reviews.models import Addendum, Report
from reviews.pdf import report_pdf_response
from reviews.services import MAX_TEXT_LENGTH, ReviewConflict

# 400 on reads: a query parameter the endpoint does not know (KnownQueryParameters).
READ_ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer}
WRITE_ERRORS = {400: ErrorSerializer, 409: ErrorSerializer, **READ_ERRORS}
PDF_ERRORS = {409: ErrorSerializer, **READ_ERRORS}


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The case's state does not allow this."
    default_code = "conflict"


def _conflict(exc: ReviewConflict) -> Conflict:
    return Conflict(exc.message, code=exc.code)


# Serializers -------------------------------------------------------------------------------


class AddendumSerializer(serializers.ModelSerializer):
    author = serializers.CharField(source="author.username", read_only=True)

    class Meta:
        model = Addendum
        fields = ["id", "text", "author", "created_at"]
        read_only_fields = fields


class ReportSerializer(serializers.ModelSerializer):
    """A signed report: the AI result as shown when signing (copied), and the radiologist's."""

    url = serializers.SerializerMethodField()
    pdf_url = serializers.SerializerMethodField()
    signed_by = serializers.CharField(source="signed_by.username", read_only=True)
    disagrees_with_ai = serializers.BooleanField(read_only=True)
    ai_results = serializers.ListField(
        child=serializers.DictField(), read_only=True, help_text="Every image's latest AI result at signing."
    )
    addenda = AddendumSerializer(many=True, read_only=True)

    class Meta:
        model = Report
        fields = [
            "id",
            "url",
            "pdf_url",
            "case",
            "ai_job",
            "ai_label",
            "ai_probability",
            "ai_model_name",
            "ai_model_version",
            "ai_results",
            "agrees_with_ai",
            "disagrees_with_ai",
            "final_label",
            "other_finding",
            "impression",
            "signed_by",
            "signed_at",
            "addenda",
        ]
        read_only_fields = fields

    def _absolute(self, name: str, report: Report) -> str:
        path = reverse(f"api:{name}", args=[report.case_id])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, report: Report) -> str:
        return self._absolute("case-report", report)

    @extend_schema_field(OpenApiTypes.URI)
    def get_pdf_url(self, report: Report) -> str:
        return self._absolute("case-report-pdf", report)


class ReportSignSerializer(InputSerializer):
    agrees_with_ai = serializers.BooleanField(
        help_text="true: the final label is the AI's leading finding; false: give final_label."
    )
    final_label = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=64,
        help_text="With agrees_with_ai false: one of the model's class labels, or 'other' (then other_finding).",
    )
    other_finding = serializers.CharField(required=False, allow_blank=True, default="", max_length=MAX_TEXT_LENGTH)
    # Blank is refused here with the service's message (the pages get it from the service), so
    # the schema says it: minLength 1 and a pattern that spaces only do not match.
    impression = serializers.CharField(
        max_length=MAX_TEXT_LENGTH,
        validators=[NOT_BLANK],
        error_messages={"blank": "Write an impression before signing."},
        help_text="The radiologist's free-text impression.",
    )
    shown_ai_job_id = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        min_value=0,
        help_text="The job id of the AI finding you reviewed (0: none). When given and the case's leading finding "
        "is another one now, the answer is 409 `ai_result_changed`.",
    )


class AddendumCreateSerializer(InputSerializer):
    text = serializers.CharField(
        max_length=MAX_TEXT_LENGTH, validators=[NOT_BLANK], error_messages={"blank": "Write the addendum's text."}
    )


# Views -------------------------------------------------------------------------------------


class _CaseReportBase(KnownQueryParameters, generics.GenericAPIView):
    def get_case(self) -> Case:
        try:
            return selectors.case_for_review(user=self.request.user, case_id=self.kwargs["pk"])
        except Case.DoesNotExist:
            raise NotFound() from None

    def get_report(self, case: Case) -> Report:
        report = selectors.report_for_case(case=case)
        if report is None:
            raise NotFound("This case has no signed report yet.", code="not_signed")
        return report


class CaseReportView(_CaseReportBase):
    """A case's signed report. PUT, PATCH and DELETE are refused: a signed report is locked."""

    serializer_class = ReportSerializer

    @extend_schema(responses={200: ReportSerializer, **READ_ERRORS})
    def get(self, request: Request, pk: int) -> Response:
        """The signed report with its addenda; 404 (code `not_signed`) before the case is signed."""
        report = self.get_report(self.get_case())
        return Response(ReportSerializer(report, context=self.get_serializer_context()).data)

    @extend_schema(request=ReportSignSerializer, responses={201: ReportSerializer, **WRITE_ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        """Sign the case: agree with the AI's leading finding or override it, with an impression.

        409 `already_signed` when the case is signed already (use addenda).
        """
        case = self.get_case()
        data = ReportSignSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            services.report_sign(case=case, signed_by=request.user, **data.validated_data)
        except ReviewConflict as exc:
            raise _conflict(exc) from None
        body = ReportSerializer(self.get_report(case), context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})

    def http_method_not_allowed(self, request: Request, *args, **kwargs):
        """Changing a signed report is a 409 with the reason, not a bare 405."""
        if request.method in ("PUT", "PATCH", "DELETE"):
            case = self.get_case()
            if selectors.report_for_case(case=case) is not None:
                raise Conflict(
                    "A signed report is locked and cannot be changed or deleted; add an addendum instead.",
                    code="report_locked",
                )
        return super().http_method_not_allowed(request, *args, **kwargs)


class CaseReportAddendaView(_CaseReportBase):
    serializer_class = AddendumCreateSerializer

    @extend_schema(request=AddendumCreateSerializer, responses={201: AddendumSerializer, **WRITE_ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        """Add an addendum to the signed report; 409 `not_signed` before the case is signed."""
        case = self.get_case()
        data = AddendumCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            addendum = services.addendum_add(case=case, author=request.user, text=data.validated_data["text"])
        except ReviewConflict as exc:
            raise _conflict(exc) from None
        location = request.build_absolute_uri(reverse("api:case-report", args=[case.pk]))
        body = AddendumSerializer(addendum, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": location})


class CaseReportPdfView(_CaseReportBase):
    content_negotiation_class = IgnoreAcceptHeader  # `Accept: application/pdf` must not be a 406
    serializer_class = None

    @extend_schema(
        responses={
            (200, "application/pdf"): OpenApiResponse(OpenApiTypes.BINARY, description="The signed report as PDF."),
            **{(code, "application/json"): serializer for code, serializer in PDF_ERRORS.items()},
        }
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        """The signed report as a PDF; 409 `not_signed` before the case is signed."""
        case = self.get_case()
        report = selectors.report_for_case(case=case)
        if report is None:
            raise Conflict(services.NOT_SIGNED_PDF_MESSAGE, code="not_signed")
        return report_pdf_response(report=report, case=case)
