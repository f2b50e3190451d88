"""Read-only API of model statuses: each installed model version's status in the caller's
department, for radiologists and API tokens alike (what the shown results rest on)."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, serializers

from diagnosis.api.filters import ListParameters
from diagnosis.api.views import PAGE_ERRORS, KnownQueryParameters
from diagnosis.model_status import validation_url
from diagnosis.models import Modality, ModelDeployment
from modelops import selectors


class ModelStatusFilter(ListParameters):
    modality = serializers.ChoiceField(choices=Modality.choices, required=False)
    status = serializers.ChoiceField(choices=ModelDeployment.Status.choices, required=False)

    def filter(self, deployments: QuerySet[ModelDeployment]) -> QuerySet[ModelDeployment]:
        data = self.validated_data
        if data.get("modality"):
            deployments = deployments.filter(modality=data["modality"])
        if data.get("status"):
            deployments = deployments.filter(status=data["status"])
        return deployments


class DepartmentModelStatusChangeSerializer(serializers.Serializer):
    from_status = serializers.CharField(help_text="Empty for the row created at installation.")
    to_status = serializers.CharField()
    changed_at = serializers.DateTimeField()
    reason = serializers.CharField()
    override = serializers.BooleanField(help_text="A site admin overrode the signed-case threshold.")


class DepartmentModelStatusSerializer(serializers.Serializer):
    model_name = serializers.CharField()
    model_version = serializers.CharField()
    modality = serializers.ChoiceField(choices=Modality.choices)
    status = serializers.ChoiceField(
        choices=ModelDeployment.Status.choices,
        help_text="silent: runs, results hidden; assistive: results shown and used for triage; retired: does not run.",
    )
    status_since = serializers.DateTimeField()
    validation_page = serializers.SerializerMethodField(help_text="The department admins' validation page.")
    history = DepartmentModelStatusChangeSerializer(many=True, source="changes.all", help_text="Newest first.")

    def get_validation_page(self, deployment: ModelDeployment) -> str:
        request = self.context.get("request")
        url = validation_url(deployment.model_name, deployment.model_version)
        return request.build_absolute_uri(url) if request is not None else url


@extend_schema_view(
    get=extend_schema(
        parameters=[ModelStatusFilter], responses={200: DepartmentModelStatusSerializer(many=True), **PAGE_ERRORS}
    )
)
class ModelStatusListView(KnownQueryParameters, generics.ListAPIView):
    """Each model version's status in your department (read-only); `?modality=` and `?status=` narrow it."""

    serializer_class = DepartmentModelStatusSerializer

    def get_query_parameters_class(self):
        return ModelStatusFilter

    def get_queryset(self) -> QuerySet[ModelDeployment]:
        deployments = selectors.deployments_of(department_id=self.request.user.department_id).prefetch_related(
            "changes"
        )
        return self.query_parameters().filter(deployments)
