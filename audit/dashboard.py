"""The department dashboard: per model version, what the AI saw, what the gate refused and how
often the AI agreed with the radiologists who signed.

Aggregate queries (jobs, predictions, signed reports, and the same per ISO week), grouped by
model version in the database, whatever the number of cases. Agreement is measured against the
radiologists: the signed final label is the reference, the AI label copied into the report at
signing is the prediction, so a later re-run of the model cannot change it.

A date range (GET `start`, `end`, validated) bounds the images by upload day and the reports by
signing day; the weekly axis has a row for every week of the range, empty weeks included. Every
class of an installed version is shown, predicted here or not. Radiologists do not see a version
that is silent here and was never assistive (its results are hidden from them everywhere);
department admins see every version with its status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path

from django import forms
from django.conf import settings
from django.db.models import Count, Exists, F, OuterRef, Q
from django.db.models.functions import TruncWeek
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from audit import charts
from diagnosis.models import InferenceJob, ModelDeployment, ModelStatusChange, Prediction
from health.selectors import silence_warnings
from ml.labels import DISPLAY_NAMES, display_name
from ml.registry import installed_models
from reviews.models import Report

DEFAULT_WEEKS = 12
MAX_WEEKS = 156  # three years of weekly rows at most
FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(2999, 12, 31)  # no date arithmetic overflow near year 9999

Key = tuple[str, str]


@dataclass
class Sensitivity:
    label: str
    detected: int  # signed as this label, and the AI said so too
    signed: int  # signed as this label

    @property
    def value(self) -> float | None:
        return self.detected / self.signed if self.signed else None


@dataclass
class ModelVersionStats:
    model_name: str
    model_version: str
    cases: int = 0
    images: int = 0
    succeeded: int = 0
    rejected: int = 0
    failed: int = 0
    findings: dict[str, int] = field(default_factory=dict)
    pairs: dict[tuple[str, str], int] = field(default_factory=dict)  # (radiologist, AI) -> reports
    classes: tuple[str, ...] = ()  # the installed version's classes (model.json), shown even at zero
    status: str = ""  # silent, assistive or retired here; "" when the version has no row here
    readers_see: bool = True  # False: silent or retired here and never assistive (admins only)
    weeks: list[WeekRow] = field(default_factory=list)  # one per week of the range, oldest first

    @property
    def gate_judged(self) -> int:
        """Jobs the gate decided on: classified or refused (a failed job never reached a verdict)."""
        return self.succeeded + self.rejected

    @property
    def rejection_rate(self) -> float | None:
        return self.rejected / self.gate_judged if self.gate_judged else None

    @property
    def reports(self) -> int:
        return sum(self.pairs.values())

    @property
    def agreed(self) -> int:
        return sum(n for (signed, ai), n in self.pairs.items() if signed == ai)

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.reports if self.reports else None

    @property
    def ai_labels(self) -> list[str]:
        """The model's classes seen here (predicted, or signed by a radiologist): matrix columns."""
        seen = set(self.findings) | {ai for _, ai in self.pairs} | {signed for signed, _ in self.pairs}
        return _ordered((seen | set(self.classes)) - {Report.OTHER})

    @property
    def signed_labels(self) -> list[str]:
        """Rows of the matrix: the classes, then "other" (a finding the model has no class for)."""
        other = [Report.OTHER] if any(signed == Report.OTHER for signed, _ in self.pairs) else []
        return self.ai_labels + other

    @property
    def matrix(self) -> list[list[int]]:
        return [[self.pairs.get((signed, ai), 0) for ai in self.ai_labels] for signed in self.signed_labels]

    @property
    def matrix_rows(self) -> list[tuple[str, list[int]]]:
        return list(zip(self.signed_labels, self.matrix, strict=True))

    @property
    def sensitivities(self) -> list[Sensitivity]:
        return [
            Sensitivity(
                label=label,
                detected=self.pairs.get((label, label), 0),
                signed=sum(n for (signed, _), n in self.pairs.items() if signed == label),
            )
            for label in self.ai_labels
        ]

    @property
    def findings_total(self) -> int:
        return sum(self.findings.values())

    # Charts ------------------------------------------------------------------------------

    @property
    def version_label(self) -> str:
        return f"{self.model_name} {self.model_version}"

    def findings_chart(self):
        total = self.findings_total or 1
        counts = [(label, self.findings.get(label, 0)) for label in self.ai_labels]
        rows = [(display_name(label), n / total, f"{n} ({n / total:.0%})") for label, n in counts]
        return charts.bar_chart(rows, title=f"AI findings of {self.version_label}", max_value=1.0)

    def matrix_chart(self):
        return charts.confusion_matrix(
            rows=[display_name(label) for label in self.signed_labels],
            columns=[display_name(label) for label in self.ai_labels],
            counts=self.matrix,
            title=f"Radiologist versus AI labels for {self.version_label}",
            row_axis="Radiologist",
            column_axis="AI",
        )

    def sensitivity_chart(self):
        rows = [
            (display_name(s.label), s.value or 0.0, f"{s.value:.0%} ({s.detected}/{s.signed})" if s.signed else "—")
            for s in self.sensitivities
        ]
        return charts.bar_chart(rows, title=f"Sensitivity of {self.version_label} against radiologists", max_value=1.0)

    def gate_chart(self):
        rows = [
            ("Classified", self.succeeded, str(self.succeeded)),
            ("Refused by gate", self.rejected, str(self.rejected)),
            ("Failed", self.failed, str(self.failed)),
        ]
        return charts.bar_chart(rows, title=f"Job outcomes of {self.version_label}")

    def weekly_chart(self):
        columns = [(week.label, week.images, f"{week.images} image(s)") for week in self.weeks]
        return charts.column_chart(columns, title=f"Images per week classified or refused by {self.version_label}")

    @property
    def week_rows(self) -> list[tuple[WeekRow, list[int]]]:
        """Each week with its findings in ai_labels order (zeros included): the weekly table."""
        return [(week, [week.findings.get(label, 0) for label in self.ai_labels]) for week in self.weeks]


@dataclass
class WeekRow:
    start: date
    images: int = 0  # judged by the gate (classified or refused)
    refused: int = 0
    findings: dict[str, int] = field(default_factory=dict)
    reports: int = 0
    agreed: int = 0

    @property
    def label(self) -> str:
        year, week, _ = self.start.isocalendar()
        return f"{year}-W{week:02d}"

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.reports if self.reports else None

    @property
    def rejection_rate(self) -> float | None:
        return self.refused / self.images if self.images else None


_KNOWN_ORDER = {label: n for n, label in enumerate(DISPLAY_NAMES)}


def service_warnings() -> list[str]:
    """Beat or every worker of a queue silent (health app heartbeats): the dashboard says so,
    because results stop arriving and nothing else on the pages would tell why."""
    return [warning.message for warning in silence_warnings()]


def _ordered(labels: set[str]) -> list[str]:
    """Known classes in their usual order, then the rest alphabetically, "other" last."""
    return sorted(labels, key=lambda label: (label == Report.OTHER, _KNOWN_ORDER.get(label, len(_KNOWN_ORDER)), label))


def _bounds(start: date | None, end: date | None) -> tuple[datetime | None, datetime | None]:
    """[start 00:00, the day after end 00:00) in the current time zone."""
    low = timezone.make_aware(datetime.combine(start, time.min)) if start else None
    high = timezone.make_aware(datetime.combine(end + timedelta(days=1), time.min)) if end else None
    return low, high


def week_starts(start: date, end: date) -> list[date]:
    """The Mondays of every ISO week that overlaps [start, end]."""
    first = start - timedelta(days=start.weekday())
    return [first + timedelta(weeks=n) for n in range((end - first).days // 7 + 1)]


def dashboard_for_department(
    *, department_id: int, start: date | None = None, end: date | None = None, admin_view: bool = True
) -> list[ModelVersionStats]:
    """Every model version that has worked on this department's images (within the range when
    given, then with a row per week), sorted by name and version. `admin_view` False: what a
    radiologist sees, without the versions that are silent or retired here and never were assistive."""
    stats: dict[Key, ModelVersionStats] = {}

    def entry(name: str, version: str) -> ModelVersionStats:
        return stats.setdefault((name, version), ModelVersionStats(model_name=name, model_version=version))

    low, high = _bounds(start, end)
    image_range = Q()
    if low is not None:
        image_range &= Q(image__uploaded_at__gte=low)
    if high is not None:
        image_range &= Q(image__uploaded_at__lt=high)
    prediction_range = Q(**{f"job__{key}": value for key, value in image_range.children})
    report_range = Q()
    if low is not None:
        report_range &= Q(signed_at__gte=low)
    if high is not None:
        report_range &= Q(signed_at__lt=high)

    S = InferenceJob.Status
    department_jobs = InferenceJob.objects.filter(
        image_range, image__case__patient__department_id=department_id, image__withdrawn_at__isnull=True
    ).exclude(model_name="")
    jobs = (
        department_jobs.values("model_name", "model_version")
        .annotate(
            cases=Count("image__case", distinct=True),
            images=Count("image", distinct=True),
            succeeded=Count("id", filter=Q(status=S.SUCCEEDED)),
            rejected=Count("id", filter=Q(status=S.REJECTED)),
            failed=Count("id", filter=Q(status=S.FAILED)),
        )
        .order_by()
    )
    for row in jobs:
        item = entry(row["model_name"], row["model_version"])
        item.cases, item.images = row["cases"], row["images"]
        item.succeeded, item.rejected, item.failed = row["succeeded"], row["rejected"], row["failed"]

    department_predictions = Prediction.objects.filter(
        prediction_range,
        job__image__case__patient__department_id=department_id,
        job__image__withdrawn_at__isnull=True,
    )
    findings = department_predictions.values("model_name", "model_version", "top_label").annotate(n=Count("id"))
    for row in findings.order_by():
        entry(row["model_name"], row["model_version"]).findings[row["top_label"]] = row["n"]

    department_reports = Report.objects.filter(report_range, case__patient__department_id=department_id).exclude(
        ai_label=""
    )
    signed = department_reports.values("ai_model_name", "ai_model_version", "final_label", "ai_label").annotate(
        n=Count("id")
    )
    for row in signed.order_by():
        entry(row["ai_model_name"], row["ai_model_version"]).pairs[(row["final_label"], row["ai_label"])] = row["n"]

    if start is not None and end is not None:
        _weekly(stats, start, end, department_jobs, department_predictions, department_reports)
    _statuses(stats, department_id)
    specs = {(spec.name, spec.version): spec for spec in installed_models(Path(settings.XNET_MODEL_DIR))}
    for key, item in stats.items():
        if key in specs:
            item.classes = specs[key].classes
    versions = [stats[key] for key in sorted(stats)]
    if not admin_view:
        versions = [v for v in versions if v.readers_see]
    return versions


def _weekly(stats: dict[Key, ModelVersionStats], start: date, end: date, jobs, predictions, reports) -> None:
    """A WeekRow per version and week of the range (three grouped queries)."""
    S = InferenceJob.Status
    rows: dict[tuple[str, str, date], WeekRow] = {}
    mondays = week_starts(start, end)
    for item in stats.values():
        item.weeks = [WeekRow(start=monday) for monday in mondays]
        for week in item.weeks:
            rows[(item.model_name, item.model_version, week.start)] = week

    def row(name: str, version: str, when) -> WeekRow | None:
        day = timezone.localtime(when).date() if isinstance(when, datetime) else when
        return rows.get((name, version, day))

    per_week = (
        jobs.annotate(week=TruncWeek("image__uploaded_at"))
        .values("model_name", "model_version", "week")
        .annotate(
            judged=Count("id", filter=Q(status__in=[S.SUCCEEDED, S.REJECTED])),
            refused=Count("id", filter=Q(status=S.REJECTED)),
        )
        .order_by()
    )
    for item in per_week:
        week = row(item["model_name"], item["model_version"], item["week"])
        if week is not None:
            week.images, week.refused = item["judged"], item["refused"]
    for item in (
        predictions.annotate(week=TruncWeek("job__image__uploaded_at"))
        .values("model_name", "model_version", "week", "top_label")
        .annotate(n=Count("id"))
        .order_by()
    ):
        week = row(item["model_name"], item["model_version"], item["week"])
        if week is not None:
            week.findings[item["top_label"]] = item["n"]
    for item in (
        reports.annotate(week=TruncWeek("signed_at"))
        .values("ai_model_name", "ai_model_version", "week")
        .annotate(n=Count("id"), agreed=Count("id", filter=Q(final_label=F("ai_label"))))
        .order_by()
    ):
        week = row(item["ai_model_name"], item["ai_model_version"], item["week"])
        if week is not None:
            week.reports, week.agreed = item["n"], item["agreed"]


def _statuses(stats: dict[Key, ModelVersionStats], department_id: int) -> None:
    """Each version's status here (one query), and whether radiologists may see it."""
    ever_assistive = ModelStatusChange.objects.filter(deployment=OuterRef("pk"), to_status="assistive")
    deployments = (
        ModelDeployment.objects.filter(department_id=department_id)
        .annotate(was_assistive=Exists(ever_assistive))
        .values_list("model_name", "model_version", "status", "was_assistive")
    )
    for name, version, status, was_assistive in deployments:
        item = stats.get((name, version))
        if item is None:
            continue
        item.status = status
        item.readers_see = status == ModelDeployment.Status.ASSISTIVE or was_assistive


class DashboardRangeForm(forms.Form):
    """The dashboard's date range: days, both optional (default: the last 12 weeks to today)."""

    start = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        for name in ("start", "end"):
            day = data.get(name)
            if day is not None and not FIRST_DAY <= day <= LAST_DAY:
                self.add_error(name, f"Enter a day between {FIRST_DAY} and {LAST_DAY}.")
        if self.errors:
            return data
        end = data.get("end") or timezone.localdate()
        start = data.get("start") or (end - timedelta(days=end.weekday()) - timedelta(weeks=DEFAULT_WEEKS - 1))
        if start > end:
            raise forms.ValidationError("The start date is after the end date.", code="reversed")
        if len(week_starts(start, end)) > MAX_WEEKS:
            raise forms.ValidationError(f"Choose at most {MAX_WEEKS} weeks.", code="too_long")
        data["start"], data["end"] = start, end
        return data


def default_range() -> tuple[date, date]:
    end = timezone.localdate()
    return end - timedelta(days=end.weekday()) - timedelta(weeks=DEFAULT_WEEKS - 1), end


def dashboard_page(request: HttpRequest) -> HttpResponse:
    """The dashboard for the user's department; a malformed range is a 400 showing the error
    above the default range's numbers."""
    form = DashboardRangeForm(request.GET)
    valid = form.is_valid()
    start, end = (form.cleaned_data["start"], form.cleaned_data["end"]) if valid else default_range()
    versions = dashboard_for_department(
        department_id=request.user.department_id,
        start=start,
        end=end,
        admin_view=request.user.is_department_admin,
    )
    context = {
        "versions": versions,
        "service_warnings": service_warnings(),
        "form": form,
        "start": start,
        "end": end,
    }
    return render(request, "audit/dashboard.html", context, status=200 if valid else 400)
