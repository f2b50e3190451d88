"""Query parameters of the API's endpoints, the list filters among them.

Plain serializers over `request.query_params`: a malformed value is a 400 in the API's error
format naming the parameter, never a silently ignored filter (which would return the wrong
patients' cases) and never a 500. So are a parameter the endpoint does not know (`patient_id`
for `patient`), a blank one and a repeated one: each of them used to return every row.
"""

from __future__ import annotations

from datetime import date, datetime

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from accounts.models import User
from diagnosis import selectors
from diagnosis.api.serializers import InputSerializer
from diagnosis.models import Case, InferenceJob, Modality, Patient

CASE_STATUSES = [*InferenceJob.Status.values, "none"]


class QueryParameters(InputSerializer):
    """Base of every endpoint's query parameters: unknown, blank and repeated ones are refused."""

    unknown_kind = "query parameter"
    unknown_code = "unknown_parameter"
    also_accepted = ("format",)  # DRF's renderer override (`?format=json`)

    def refused(self, data) -> dict[str, list[ErrorDetail]]:
        errors = super().refused(data)
        for name in set(data) & set(self.fields):
            values = data.getlist(name)
            if len(values) > 1:  # DRF would take the last one
                errors[name] = [ErrorDetail("Give this parameter once.", code="repeated")]
            elif values[0] == "":  # DRF would skip it, i.e. not filter at all
                errors[name] = [ErrorDetail("This parameter may not be blank.", code="blank")]
        return errors


class ListParameters(QueryParameters):
    also_accepted = ("page", "format")  # `page`: diagnosis.api.pagination


# Schema: what the field parses, so a client (and schemathesis) sends what the server takes.
@extend_schema_field({"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]})
class DateOrDateTimeField(serializers.Field):
    """A day (YYYY-MM-DD, whole day included) or an RFC 3339 date-time (exact instant)."""

    default_error_messages = {"invalid": "Enter a date (YYYY-MM-DD) or an ISO 8601 date-time."}

    def to_internal_value(self, data: str) -> date | datetime:
        # RFC 3339 allows a lower-case "t" and "z"; Django's parser takes upper case only.
        value = str(data).strip().upper()
        try:
            if len(value) == 10:
                return date.fromisoformat(value)
            parsed = parse_datetime(value)
        except ValueError:
            parsed = None
        if parsed is None:
            self.fail("invalid")
        return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)

    def to_representation(self, value: date | datetime) -> str:
        return value.isoformat()


class PatientFilter(ListParameters):
    mrn = serializers.CharField(required=False, help_text="Exact medical record number.")

    def filter(self, patients: QuerySet[Patient]) -> QuerySet[Patient]:
        mrn = self.validated_data.get("mrn")
        return patients.filter(mrn=mrn) if mrn else patients


class CaseFilter(ListParameters):
    also_accepted = ("page", "cursor", "format")  # `cursor`: diagnosis.api.pagination.CaseListPagination

    status = serializers.ChoiceField(
        choices=CASE_STATUSES,
        required=False,
        help_text=(
            "Status of the case's latest job of a model assistive in its department; `none`: no such job "
            "(no upload yet, or no assistive model for the modality)."
        ),
    )
    modality = serializers.ChoiceField(choices=Modality.choices, required=False)
    patient = serializers.IntegerField(required=False, min_value=1, help_text="Patient id.")
    mrn = serializers.CharField(required=False, help_text="Exact medical record number of the patient.")
    created_after = DateOrDateTimeField(
        required=False, help_text="Created on or after this day (YYYY-MM-DD) or instant (ISO 8601)."
    )
    created_before = DateOrDateTimeField(
        required=False, help_text="Created on or before this day (YYYY-MM-DD) or instant (ISO 8601)."
    )

    def cases(self, *, user: User) -> QuerySet[Case]:
        """The user's worklist narrowed by the validated parameters."""
        data = self.validated_data
        after, before = data.get("created_after"), data.get("created_before")
        cases = selectors.worklist(
            user=user,
            status=data.get("status"),
            modality=data.get("modality"),
            date_from=after if not isinstance(after, datetime) else None,
            date_to=before if not isinstance(before, datetime) else None,
        )
        if isinstance(after, datetime):
            cases = cases.filter(created_at__gte=after)
        if isinstance(before, datetime):
            cases = cases.filter(created_at__lte=before)
        if "patient" in data:
            cases = cases.filter(patient_id=data["patient"])
        if data.get("mrn"):
            cases = cases.filter(patient__mrn=data["mrn"])
        return cases
