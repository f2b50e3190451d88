"""The department dashboard: per model version, what the AI saw, what the gate refused and how
often the AI agreed with the radiologists who signed.

Three aggregate queries (jobs, predictions, signed reports), grouped by model version in the
database, whatever the number of cases. Agreement is measured against the radiologists: the
signed final label is the reference, the AI label copied into the report at signing is the
prediction, so a later re-run of the model cannot change it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Count, Q

from audit import charts
from diagnosis.models import InferenceJob, Prediction
from health.selectors import silence_warnings
from ml.labels import DISPLAY_NAMES, display_name
from reviews.models import Report

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
        return _ordered(seen - {Report.OTHER})

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


_KNOWN_ORDER = {label: n for n, label in enumerate(DISPLAY_NAMES)}


def service_warnings() -> list[str]:
    """Beat or every worker of a queue silent (health app heartbeats): the dashboard says so,
    because results stop arriving and nothing else on the pages would tell why."""
    return [warning.message for warning in silence_warnings()]


def _ordered(labels: set[str]) -> list[str]:
    """Known classes in their usual order, then the rest alphabetically, "other" last."""
    return sorted(labels, key=lambda label: (label == Report.OTHER, _KNOWN_ORDER.get(label, len(_KNOWN_ORDER)), label))


def dashboard_for_department(*, department_id: int) -> list[ModelVersionStats]:
    """Every model version that has worked on this department's images, newest name/version last."""
    stats: dict[Key, ModelVersionStats] = {}

    def entry(name: str, version: str) -> ModelVersionStats:
        return stats.setdefault((name, version), ModelVersionStats(model_name=name, model_version=version))

    S = InferenceJob.Status
    jobs = (
        InferenceJob.objects.filter(image__case__patient__department_id=department_id, image__withdrawn_at__isnull=True)
        .exclude(model_name="")
        .values("model_name", "model_version")
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

    findings = (
        Prediction.objects.filter(
            job__image__case__patient__department_id=department_id, job__image__withdrawn_at__isnull=True
        )
        .values("model_name", "model_version", "top_label")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in findings:
        entry(row["model_name"], row["model_version"]).findings[row["top_label"]] = row["n"]

    signed = (
        Report.objects.filter(case__patient__department_id=department_id)
        .exclude(ai_label="")
        .values("ai_model_name", "ai_model_version", "final_label", "ai_label")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in signed:
        entry(row["ai_model_name"], row["ai_model_version"]).pairs[(row["final_label"], row["ai_label"])] = row["n"]

    return [stats[key] for key in sorted(stats)]
