"""REST API views: thin adapters between HTTP and the selectors/services.

Every object is fetched through a department-scoped selector, so another department's object
is a 404, never a 403. Writes go through diagnosis.services; Django ValidationErrors they raise
become 400s in diagnosis.api.errors.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch, QuerySet
from django.http import FileResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from diagnosis import downloads, selectors, services
from diagnosis.api import serializers as s
from diagnosis.api.filters import CaseFilter, PatientFilter, QueryParameters
from diagnosis.api.pagination import CaseListPagination
from diagnosis.models import Case, Image, InferenceJob, Patient, Prediction
from ml.registry import ModelSpec, installed_models

logger = logging.getLogger(__name__)

# 400 on reads: a query parameter the endpoint does not know (KnownQueryParameters).
READ_ERRORS = {400: s.ErrorSerializer, 401: s.ErrorSerializer, 403: s.ErrorSerializer, 404: s.ErrorSerializer}
WRITE_ERRORS = {400: s.ErrorSerializer, **READ_ERRORS}
CONFLICT_ERRORS = {409: s.ErrorSerializer, **WRITE_ERRORS}
LIST_ERRORS = {400: s.ErrorSerializer, 401: s.ErrorSerializer, 403: s.ErrorSerializer}
PAGE_ERRORS = {**LIST_ERRORS, 404: s.ErrorSerializer}  # a page past the last
LIST_METHODS = ("GET", "HEAD")  # the methods that read a list's filters


def _jobs_with_predictions() -> Prefetch:
    # Only jobs of models assistive in the department (issue 12): silent results are never shown.
    return Prefetch("jobs", queryset=selectors.shown_jobs().select_related("prediction").order_by("created_at", "id"))


def _upload_body(job: InferenceJob | None, image: Image, context: dict) -> tuple[dict, str]:
    """The upload's answer and its Location: the assistive model's job, or (none assistive here)
    a null job, a note saying why, and the image's URL."""
    from diagnosis.model_status import is_assistive, no_validated_model_message

    department_id = image.case.patient.department_id
    if job is not None and not is_assistive(
        department_id=department_id, model_name=job.model_name, model_version=job.model_version
    ):
        job = None  # a silent model's job: stored for validation, not shown
    note = None if job is not None else no_validated_model_message(image.modality)
    body = s.UploadResultSerializer({"image": image, "job": job, "note": note}, context=context).data
    return body, str(body["job"]["url"] if job is not None else body["image"]["url"])


class Conflict(APIException):
    """409: the case's state forbids the write (a signed case takes no new or withdrawn image)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The case's state does not allow this."
    default_code = "conflict"


class KnownQueryParameters:
    """Mixed into every API view: the query string is validated before the view runs (after
    authentication and permissions), so an unknown, blank or repeated parameter is a 400 on
    every endpoint, not only on the lists that filter (diagnosis.api.filters)."""

    def get_query_parameters_class(self) -> type[QueryParameters]:
        return QueryParameters

    def query_parameters(self) -> QueryParameters:
        if not hasattr(self, "_query_parameters"):
            query = self.get_query_parameters_class()(data=self.request.query_params)
            query.is_valid(raise_exception=True)
            self._query_parameters = query
        return self._query_parameters

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        if hasattr(self, request.method.lower()):  # an unsupported method stays a 405
            self.query_parameters()


def _created(data: dict, url: str) -> Response:
    return Response(data, status=status.HTTP_201_CREATED, headers={"Location": str(url)})


# Patients ----------------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(parameters=[PatientFilter], responses={200: s.PatientSerializer(many=True), **PAGE_ERRORS}),
    post=extend_schema(request=s.PatientCreateSerializer, responses={201: s.PatientSerializer, **LIST_ERRORS}),
)
class PatientListView(KnownQueryParameters, generics.ListCreateAPIView):
    """Your department's patients, by name; `?mrn=` finds one by medical record number."""

    serializer_class = s.PatientSerializer

    def get_query_parameters_class(self) -> type[QueryParameters]:
        return PatientFilter if self.request.method in LIST_METHODS else QueryParameters

    def get_queryset(self) -> QuerySet[Patient]:
        patients = selectors.patient_list_for_user(user=self.request.user)
        if self.request.method not in LIST_METHODS:
            return patients
        return self.query_parameters().filter(patients)

    def create(self, request: Request, *args, **kwargs) -> Response:
        data = s.PatientCreateSerializer(data=request.data, context=self.get_serializer_context())
        data.is_valid(raise_exception=True)
        patient = services.patient_create(created_by=request.user, **data.validated_data)
        output = s.PatientSerializer(patient, context=self.get_serializer_context()).data
        return _created(output, output["url"])


@extend_schema_view(get=extend_schema(responses={200: s.PatientSerializer, **READ_ERRORS}))
class PatientDetailView(KnownQueryParameters, generics.RetrieveAPIView):
    serializer_class = s.PatientSerializer

    def get_queryset(self) -> QuerySet[Patient]:
        return selectors.patient_list_for_user(user=self.request.user)


# Cases -------------------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(parameters=[CaseFilter], responses={200: s.CaseSerializer(many=True), **PAGE_ERRORS}),
    post=extend_schema(request=s.CaseCreateSerializer, responses={201: s.CaseDetailSerializer, **LIST_ERRORS}),
)
class CaseListView(KnownQueryParameters, generics.ListCreateAPIView):
    """Your department's cases, newest first, each with its latest job's status and finding.

    Pages: follow `next` and `previous` (keyset cursors: a deep page costs what the first does);
    `page=N` still answers by number."""

    serializer_class = s.CaseSerializer
    pagination_class = CaseListPagination

    def get_query_parameters_class(self) -> type[QueryParameters]:
        return CaseFilter if self.request.method in LIST_METHODS else QueryParameters

    def get_queryset(self) -> QuerySet[Case]:
        if self.request.method not in LIST_METHODS:
            return selectors.case_list_for_user(user=self.request.user)
        return self.query_parameters().cases(user=self.request.user)

    def create(self, request: Request, *args, **kwargs) -> Response:
        data = s.CaseCreateSerializer(data=request.data, context=self.get_serializer_context())
        data.is_valid(raise_exception=True)
        case = services.case_create(created_by=request.user, **data.validated_data)
        case = selectors.case_detail(user=request.user, case_id=case.pk)
        output = s.CaseDetailSerializer(case, context=self.get_serializer_context()).data
        return _created(output, output["url"])


@extend_schema_view(get=extend_schema(responses={200: s.CaseDetailSerializer, **READ_ERRORS}))
class CaseDetailView(KnownQueryParameters, generics.RetrieveAPIView):
    """One case with its images, each image's jobs and their predictions."""

    serializer_class = s.CaseDetailSerializer

    def get_object(self) -> Case:
        try:
            return selectors.case_detail(user=self.request.user, case_id=self.kwargs["pk"])
        except Case.DoesNotExist:
            raise NotFound() from None


class CaseImageUploadView(KnownQueryParameters, generics.GenericAPIView):
    parser_classes = [MultiPartParser]
    serializer_class = s.ImageUploadSerializer

    def get_queryset(self) -> QuerySet[Case]:
        return selectors.case_list_for_user(user=self.request.user)

    @extend_schema(
        operation_id="cases_images_create",
        request={"multipart/form-data": s.ImageUploadSerializer},
        responses={
            202: OpenApiResponse(
                s.UploadResultSerializer,
                description="Stored and queued for classification; the Location header is the job's URL.",
            ),
            415: s.ErrorSerializer,
            **CONFLICT_ERRORS,
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        """Upload one PNG, JPEG or DICOM image to a case and queue its classification.

        A DICOM must belong to the case's patient (PatientID = record number); a multi-frame one
        needs `frame`; one of the other modality needs `confirm_modality=true`. A signed case
        takes no new image (409 `case_signed`): create a new case for the patient. Poll the job
        (Location header) until it is finished.
        """
        case = self.get_object()
        data = self.get_serializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            jobs = services.images_upload(
                case=case,
                files=[data.validated_data["file"]],
                uploaded_by=request.user,
                frame=data.validated_data.get("frame"),
                confirm_modality=data.validated_data["confirm_modality"],
            )
        except services.CaseConflict as exc:
            raise Conflict(exc.message, code=exc.code) from None
        except DjangoValidationError as exc:
            # The inspection's message (with its code) belongs to the `file` field here.
            raise DjangoValidationError({"file": exc.error_list}) from None
        body, location = _upload_body(jobs[0] if jobs else None, jobs.images[0], self.get_serializer_context())
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": location})


class CaseFromDicomView(KnownQueryParameters, generics.GenericAPIView):
    parser_classes = [MultiPartParser]
    serializer_class = s.DicomCaseCreateSerializer

    @extend_schema(
        operation_id="cases_from_dicom_create",
        request={"multipart/form-data": s.DicomCaseCreateSerializer},
        responses={
            201: OpenApiResponse(
                s.DicomCaseResultSerializer,
                description="The case was created (Location: the case) and the image queued.",
            ),
            415: s.ErrorSerializer,
            **LIST_ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        """Create a case from one DICOM: the patient is the one whose record number is the DICOM's
        PatientID in your department, or is registered from the DICOM's name, birth date and sex.
        The case's modality is the DICOM's unless `modality` is given."""
        data = self.get_serializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        try:
            jobs = services.case_from_dicom(
                created_by=request.user,
                files=[values["file"]],
                modality=values.get("modality"),
                indication=values["indication"],
                frame=values.get("frame"),
                confirm_modality=values["confirm_modality"],
            )
        except DjangoValidationError as exc:
            if not hasattr(exc, "error_dict"):
                exc = DjangoValidationError({"file": exc.error_list})
            raise exc from None
        image = jobs.images[0]
        case_url = request.build_absolute_uri(reverse("api:case-detail", args=[image.case_id]))
        body, _ = _upload_body(jobs[0] if jobs else None, image, self.get_serializer_context())
        body = {"case": case_url, **body}
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": case_url})


# Images, jobs, predictions -----------------------------------------------------------------


@extend_schema_view(get=extend_schema(responses={200: s.ImageWithJobsSerializer, **READ_ERRORS}))
class ImageDetailView(KnownQueryParameters, generics.RetrieveAPIView):
    serializer_class = s.ImageWithJobsSerializer

    def get_queryset(self) -> QuerySet[Image]:
        return selectors.image_list_for_user(user=self.request.user).prefetch_related(_jobs_with_predictions())


class ImageWithdrawView(KnownQueryParameters, generics.GenericAPIView):
    serializer_class = s.ImageWithdrawSerializer

    def get_queryset(self) -> QuerySet[Image]:
        return selectors.image_list_for_user(user=self.request.user)

    @extend_schema(
        operation_id="images_withdraw",
        request=s.ImageWithdrawSerializer,
        responses={200: s.ImageSerializer, **CONFLICT_ERRORS},
    )
    def post(self, request: Request, pk: int) -> Response:
        """Withdraw a mistaken upload of an unsigned case, with a reason (the uploader or a
        department admin). The image leaves the case, the worklist and the API (404 from now on);
        the file is kept and the audit trail records who, when and why. A signed case answers
        409 `case_signed`; another user 403."""
        image = self.get_object()
        data = self.get_serializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            reason = data.validated_data["reason"]
            image = services.image_withdraw(image=image, withdrawn_by=request.user, reason=reason)
        except services.CaseConflict as exc:
            raise Conflict(exc.message, code=exc.code) from None
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc)) from None
        return Response(s.ImageSerializer(image, context=self.get_serializer_context()).data)


class IgnoreAcceptHeader(BaseContentNegotiation):
    """The file view answers with the stored image whatever the Accept header says (an
    `Accept: image/png` must not be a 406); its errors are JSON."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class ImageFileView(KnownQueryParameters, generics.GenericAPIView):
    content_negotiation_class = IgnoreAcceptHeader
    serializer_class = None

    def get_queryset(self) -> QuerySet[Image]:
        return selectors.image_list_for_user(user=self.request.user)

    @extend_schema(
        responses={
            (200, "image/png"): OpenApiTypes.BINARY,
            (200, "image/jpeg"): OpenApiTypes.BINARY,
            **{(code, "application/json"): serializer for code, serializer in READ_ERRORS.items()},
        }
    )
    def get(self, request: Request, pk: int) -> FileResponse:
        """The stored image file, streamed after the department check; for a DICOM, the PNG
        rendered from it (the original object is never sent)."""
        image = self.get_object()
        try:
            return downloads.image_response(image)
        except FileNotFoundError:
            logger.error("Image %s has a row but no file at %s", image.pk, image.file.name)
            raise NotFound("The stored file of this image is missing.") from None


class PredictionHeatmapView(KnownQueryParameters, generics.GenericAPIView):
    content_negotiation_class = IgnoreAcceptHeader
    serializer_class = None

    def get_queryset(self) -> QuerySet[Prediction]:
        return selectors.prediction_list_for_user(user=self.request.user)

    @extend_schema(
        responses={
            (200, "image/png"): OpenApiTypes.BINARY,
            **{(code, "application/json"): serializer for code, serializer in READ_ERRORS.items()},
        }
    )
    def get(self, request: Request, pk: int) -> FileResponse:
        """The prediction's Grad-CAM heatmap (transparent PNG, model input size), after the department check."""
        prediction = self.get_object()
        if not prediction.heatmap:
            raise NotFound("This prediction has no heatmap.")
        try:
            return downloads.heatmap_response(prediction)
        except FileNotFoundError:
            logger.error("Prediction %s has no heatmap file at %s", prediction.pk, prediction.heatmap.name)
            raise NotFound("The stored heatmap of this prediction is missing.") from None


@extend_schema_view(get=extend_schema(responses={200: s.JobSerializer, **READ_ERRORS}))
class JobDetailView(KnownQueryParameters, generics.RetrieveAPIView):
    """An inference job; `prediction` is null until it succeeded."""

    serializer_class = s.JobSerializer

    def get_queryset(self) -> QuerySet[InferenceJob]:
        return selectors.job_list_for_user(user=self.request.user)


class JobRetryView(KnownQueryParameters, generics.GenericAPIView):
    serializer_class = s.JobSerializer

    def get_queryset(self) -> QuerySet[InferenceJob]:
        return selectors.job_list_for_user(user=self.request.user)

    @extend_schema(
        operation_id="jobs_retry_create",
        request=None,
        responses={
            202: OpenApiResponse(s.JobSerializer, description="The new job; the Location header is its URL."),
            **WRITE_ERRORS,
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        """Classify a failed job's image again, as a new job (department admins; unsigned cases only).

        For a job that failed for a cause since fixed (a full disk, a missing model). Only the
        image's latest job can be re-run; the failed one stays in the image's history.
        """
        job = self.get_object()
        retry = services.job_retry(job_id=job.pk, user=request.user)
        body = self.get_serializer(retry).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": str(body["url"])})


@extend_schema_view(get=extend_schema(responses={200: s.PredictionDetailSerializer, **READ_ERRORS}))
class PredictionDetailView(KnownQueryParameters, generics.RetrieveAPIView):
    serializer_class = s.PredictionDetailSerializer

    def get_queryset(self) -> QuerySet[Prediction]:
        return selectors.prediction_list_for_user(user=self.request.user)


@extend_schema_view(get=extend_schema(responses={200: s.InstalledModelSerializer(many=True), **READ_ERRORS}))
class InstalledModelListView(KnownQueryParameters, generics.ListAPIView):
    """The models this installation runs, with their metrics, intended use and card.

    Not paginated: a handful of folders. Not department data: every user may read it.
    """

    serializer_class = s.InstalledModelSerializer
    pagination_class = None

    def get_queryset(self) -> list[ModelSpec]:
        return installed_models(settings.XNET_MODEL_DIR)
