"""HTTP: DICOMweb STOW-RS (/dicomweb/studies) and the deliveries API (/api/v1/dicom/...)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import JsonResponse
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions, generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from diagnosis.api.filters import ListParameters, QueryParameters
from diagnosis.api.serializers import ErrorSerializer
from diagnosis.api.views import KnownQueryParameters
from dicomnet import selectors, services, stow
from dicomnet.models import Delivery, ReceivedInstance


class UnsupportedMediaType(exceptions.APIException):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    default_code = "unsupported_media_type"


def _raw_body(request: Request) -> bytes:
    """The whole body, read from the stream: `request.body` refuses anything over
    DATA_UPLOAD_MAX_MEMORY_SIZE (a form's limit), while a study is an upload, which
    xnet_site.security.RequestBodyLimitMiddleware has already held to the upload limit."""
    stream = request.stream
    return stream.read() if stream is not None else b""


class StowView(APIView):
    """STOW-RS: store DICOM instances (multipart/related; type="application/dicom") in the
    caller's department, as the DICOM listener does: one case per study, the same refusals."""

    parser_classes: list = []  # the body is read raw

    @extend_schema(exclude=True)
    def post(self, request: Request, study_uid: str | None = None) -> JsonResponse:
        try:
            parts = stow.split_parts(request.META.get("CONTENT_TYPE", ""), _raw_body(request))
        except ValidationError as exc:
            message = " ".join(exc.messages)
            if exc.code == "unsupported_media_type":
                raise UnsupportedMediaType(message) from None
            raise exceptions.ValidationError({"body": [message]}) from None
        department = request.user.department
        results = []
        for data in parts:
            result = services.instance_receive(
                department=department,
                node=None,
                data=data,
                source=ReceivedInstance.Source.STOW,
                calling_ae=f"user {request.user.get_username()}"[:16],
                study_uid=study_uid,
            )
            results.append(result)
        code, body = stow.store_response(results, retrieve_url=request.build_absolute_uri())
        return JsonResponse(body, status=code, content_type="application/dicom+json")


class DeliverySerializer(serializers.ModelSerializer):
    node = serializers.CharField(source="node.name")
    ae_title = serializers.CharField(source="node.ae_title")

    class Meta:
        model = Delivery
        fields = [
            "id",
            "case",
            "kind",
            "node",
            "ae_title",
            "status",
            "attempts",
            "last_error",
            "sop_instance_uid",
            "series_instance_uid",
            "created_at",
            "sent_at",
        ]


ERRORS = {400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer, 404: ErrorSerializer}


class DeliveryParameters(ListParameters):
    case = serializers.IntegerField(min_value=1, max_value=2**63 - 1, required=False, help_text="only this case's")


@extend_schema_view(
    get=extend_schema(parameters=[DeliveryParameters], responses={200: DeliverySerializer(many=True), **ERRORS})
)
class DeliveryListView(KnownQueryParameters, generics.ListAPIView):
    """The case's DICOM deliveries to the department's PACS (?case=<id>), or all of them."""

    serializer_class = DeliverySerializer

    def get_query_parameters_class(self) -> type[QueryParameters]:
        return DeliveryParameters

    def get_queryset(self):
        queryset = selectors.delivery_list_for_user(user=self.request.user).order_by("-created_at", "-id")
        case = self.query_parameters().validated_data.get("case")
        if case is not None:
            queryset = queryset.filter(case_id=case)
        return queryset


class DeliveryResendView(KnownQueryParameters, APIView):
    @extend_schema(request=None, responses={202: DeliverySerializer, **ERRORS})
    def post(self, request: Request, pk: int) -> Response:
        """Send a delivery again (department admins)."""
        delivery = selectors.delivery_list_for_user(user=request.user).filter(pk=pk).first()
        if delivery is None:
            raise exceptions.NotFound("No such delivery in your department.")
        if not request.user.is_department_admin:
            raise exceptions.PermissionDenied("Only department admins can resend deliveries.")
        try:
            delivery = services.delivery_resend(delivery=delivery, user=request.user)
        except ValidationError as exc:
            raise exceptions.ValidationError({"delivery": exc.messages}) from None
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
