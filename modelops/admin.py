"""Drift alarms in the Django admin, read-only: the daily check writes them, nobody edits them."""

from django.contrib import admin

from modelops.models import DriftAlarm
from reviews.admin import ReadOnlyAdmin


@admin.register(DriftAlarm)
class DriftAlarmAdmin(ReadOnlyAdmin):
    list_display = ["week_start", "department", "model_name", "model_version", "raised_at"]
    list_filter = ["department", "model_name"]
    list_select_related = ["department"]
    readonly_fields = [f.name for f in DriftAlarm._meta.fields]
