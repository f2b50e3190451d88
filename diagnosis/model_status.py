"""Model status per department (issue 12): which installed model versions run, and which speak.

A silent version runs on every upload of its modality and its results are stored for local
validation, but nobody sees them and triage ignores them; an assistive one is shown and orders the
worklist; a retired one no longer runs. The status lives in diagnosis (not in the higher `modelops`
app) because diagnosis creates the jobs and shows the results and must not import upwards.

Services: deployments_sync, deployment_set_status. Selectors: active_deployments,
assistive_deployment, is_assistive, assistive_q, deployment_evidence. Thresholds for promotion are
not checked here: they belong to modelops, which calls deployment_set_status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from accounts.models import Department, User
from diagnosis.models import (
    Case,
    InferenceJob,
    Modality,
    ModelDeployment,
    ModelStartingStatus,
    ModelStatusChange,
    Prediction,
)
from diagnosis.signals import model_status_changed
from ml.registry import ModelSpec, _version_key, installed_models

logger = logging.getLogger(__name__)

Status = ModelDeployment.Status
MODALITY_SHORT = {Modality.XRAY: "X-ray", Modality.CT: "CT"}
MAX_REASON = 2000


def no_validated_model_message(modality: str) -> str:
    """What the case page, the API and the PDF say where no model of the modality is assistive."""
    return (
        f"No validated model for {MODALITY_SHORT.get(modality, modality)} in this department: "
        "images are stored for reading."
    )


# Sync ----------------------------------------------------------------------------------------


def _starting_status(
    spec: ModelSpec, department: Department, *, superseded: bool, defaults: dict
) -> tuple[str, str, User | None]:
    """(status, reason, set_by) for a new deployment: the site admin's setting for this version in
    this department, else theirs for every department, else the folder's recommended_status, else
    silent; an older version of an installed model name starts retired (its newer one replaces it)."""
    for key in ((spec.name, spec.version, department.pk), (spec.name, spec.version, None)):
        chosen = defaults.get(key)
        if chosen is not None:
            where = "this department" if key[2] else "every department"
            return (
                chosen.status,
                f"installed; starting status set by the site admin for {where}: {chosen.reason}",
                chosen.set_by,
            )
    if superseded:
        return Status.RETIRED, "installed; a newer version of this model is installed, so this one starts retired", None
    recommended = spec.card.get("recommended_status")
    if recommended in (Status.SILENT, Status.ASSISTIVE):
        return recommended, f"installed; the model folder recommends starting {recommended}", None
    return Status.SILENT, "installed; a new model version starts silent until it is validated here", None


def deployments_sync(
    *, model_dir: Path | None = None, departments: list[Department] | None = None
) -> list[ModelDeployment]:
    """Give every installed model version a deployment row in every department (or those given);
    returns the rows created. Existing rows are never changed: a status once set is changed only
    by deployment_set_status. A version that would start assistive where another version of its
    modality is assistive already starts silent instead (promotion replaces a model, not a sync).

    Run on migrate, at worker start, by `manage.py sync_models`, by seed_demo, and for a new
    department when it is created.
    """
    specs = installed_models(Path(model_dir or settings.XNET_MODEL_DIR))
    if not specs:
        return []
    newest: dict[str, tuple] = {}
    for spec in specs:
        key = _version_key(spec.version)
        newest[spec.name] = max(newest.get(spec.name, key), key)
    # Newest first, so that of two versions that would start assistive the newer one does.
    specs.sort(key=lambda spec: (_version_key(spec.version), spec.name), reverse=True)
    defaults = {
        (row.model_name, row.model_version, row.department_id): row
        for row in ModelStartingStatus.objects.select_related("set_by")
    }
    created: list[ModelDeployment] = []
    for department in departments if departments is not None else Department.objects.all():
        with transaction.atomic():
            existing = set(
                ModelDeployment.objects.select_for_update()
                .filter(department=department)
                .values_list("model_name", "model_version")
            )
            for spec in specs:
                if (spec.name, spec.version) in existing:
                    continue
                status, reason, set_by = _starting_status(
                    spec, department, superseded=_version_key(spec.version) < newest[spec.name], defaults=defaults
                )
                if (
                    status == Status.ASSISTIVE
                    and ModelDeployment.objects.filter(
                        department=department, modality=spec.modality, status=Status.ASSISTIVE
                    ).exists()
                ):
                    status = Status.SILENT
                    reason += (
                        f" (starts silent instead: another {MODALITY_SHORT.get(spec.modality)} model is assistive "
                        "here; promote this one on its validation page)"
                    )
                deployment = ModelDeployment.objects.create(
                    department=department,
                    modality=spec.modality,
                    model_name=spec.name,
                    model_version=spec.version,
                    status=status,
                )
                change = ModelStatusChange.objects.create(
                    deployment=deployment, from_status="", to_status=status, reason=reason, changed_by=set_by
                )
                model_status_changed.send(sender=ModelDeployment, deployment=deployment, change=change, user=set_by)
                created.append(deployment)
    if created:
        logger.info("Model deployments created: %s", ", ".join(str(row) for row in created))
    return created


# Status changes ---------------------------------------------------------------------------


def deployment_set_status(
    *, deployment: ModelDeployment, status: str, changed_by: User | None, reason: str, override: bool = False
) -> ModelDeployment:
    """Change a deployment's status, in one transaction with its history row and audit signal.

    Making a version assistive demotes the department's previous assistive version of the same
    modality to silent (with its own history row naming the replacement). No thresholds here:
    modelops' promotion service checks them before calling this.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why the model's status changes (it goes into the history and audit)."})
    if len(reason) > MAX_REASON:
        raise ValidationError({"reason": f"Keep the reason under {MAX_REASON} characters."})
    if status not in Status.values:
        raise ValidationError({"status": f"Unknown status {status!r}; one of {', '.join(Status.values)}."})
    now = timezone.now()
    with transaction.atomic():
        # Lock every deployment of the department's modality: two promotions cannot cross.
        rows = {
            row.pk: row
            for row in ModelDeployment.objects.select_for_update().filter(
                department_id=deployment.department_id, modality=deployment.modality
            )
        }
        current = rows[deployment.pk]
        if current.status == status:
            return current
        if status == Status.ASSISTIVE:
            for other in rows.values():
                if other.pk != current.pk and other.status == Status.ASSISTIVE:
                    _change(
                        other,
                        Status.SILENT,
                        changed_by=changed_by,
                        reason=f"replaced by {current.model_name} {current.model_version}: {reason}",
                        override=override,
                        now=now,
                    )
        _change(current, status, changed_by=changed_by, reason=reason, override=override, now=now)
    # The caller's object tells the truth too.
    deployment.status, deployment.status_since = current.status, current.status_since
    return current


def _change(
    deployment: ModelDeployment, status: str, *, changed_by: User | None, reason: str, override: bool, now
) -> ModelStatusChange:
    before = deployment.status
    deployment.status = status
    deployment.status_since = now
    deployment.save(update_fields=["status", "status_since"])
    change = ModelStatusChange.objects.create(
        deployment=deployment,
        from_status=before,
        to_status=status,
        reason=reason,
        changed_by=changed_by,
        changed_at=now,
        override=override,
    )
    model_status_changed.send(sender=ModelDeployment, deployment=deployment, change=change, user=changed_by)
    return change


# Selectors --------------------------------------------------------------------------------


def active_deployments(*, department: Department | int, modality: str) -> list[ModelDeployment]:
    """The versions that run on an upload of this modality here: silent and assistive, the
    assistive one first."""
    department_id = getattr(department, "pk", department)
    rows = ModelDeployment.objects.filter(
        department_id=department_id, modality=modality, status__in=ModelDeployment.ACTIVE
    )
    return sorted(rows, key=lambda row: (row.status != Status.ASSISTIVE, row.model_name, row.model_version))


def assistive_deployment(*, department: Department | int, modality: str) -> ModelDeployment | None:
    department_id = getattr(department, "pk", department)
    return ModelDeployment.objects.filter(
        department_id=department_id, modality=modality, status=Status.ASSISTIVE
    ).first()


def is_assistive(*, department_id: int, model_name: str, model_version: str) -> bool:
    return ModelDeployment.objects.filter(
        department_id=department_id, model_name=model_name, model_version=model_version, status=Status.ASSISTIVE
    ).exists()


def assistive_q(job_path: str = "") -> Q:
    """A filter keeping jobs (job_path "") or predictions ("job__") of a model that is assistive in
    the image's department now: what radiologists, tokens, reports and triage may see."""
    deployments = ModelDeployment.objects.filter(
        department_id=OuterRef(f"{job_path}image__case__patient__department_id"),
        model_name=OuterRef(f"{job_path}model_name"),
        model_version=OuterRef(f"{job_path}model_version"),
        status=Status.ASSISTIVE,
    )
    return Q(Exists(deployments))


def assistive_jobs(jobs):
    """A job queryset narrowed to assistive models' jobs."""
    return jobs.filter(assistive_q())


def assistive_keys(*, department_id: int) -> set[tuple[str, str]]:
    """(model_name, model_version) of the department's assistive versions: one query, for code
    that filters jobs already loaded."""
    return set(
        ModelDeployment.objects.filter(department_id=department_id, status=Status.ASSISTIVE).values_list(
            "model_name", "model_version"
        )
    )


def validation_url(model_name: str, model_version: str) -> str:
    """The validation page of a version (modelops), or its plain path while that app is absent."""
    try:
        return reverse("modelops:validation", args=[model_name, model_version])
    except NoReverseMatch:
        return f"/models/{model_name}/{model_version}/validation/"


@dataclass(frozen=True)
class Evidence:
    """One line a shown result carries: its model's status and what it rests on here."""

    status: str
    since: str
    text: str
    validation_url: str
    signed_cases: int


def deployment_evidence(*, deployment: ModelDeployment, label: str | None = None) -> Evidence:
    """ "assistive since 2026-12-10, validated on 212 signed cases here: agreement 88 %, pneumonia
    sensitivity 91 %", from this department's signed reports against this version's results (one
    query); with no signed case, who made it assistive and why."""
    rows = list(
        Prediction.objects.filter(
            model_name=deployment.model_name,
            model_version=deployment.model_version,
            job__status=InferenceJob.Status.SUCCEEDED,
            job__image__withdrawn_at__isnull=True,
            job__image__case__patient__department_id=deployment.department_id,
            job__image__case__report__isnull=False,
        ).values_list("job__image__case_id", "top_label", "job__image__case__report__final_label")
    )
    since = timezone.localtime(deployment.status_since).date().isoformat()
    head = f"{deployment.status} since {since}"
    cases = len({case_id for case_id, _, _ in rows})
    if cases:
        agree = sum(top == final for _, top, final in rows)
        plural = "s" if cases != 1 else ""
        text = f"{head}, validated on {cases} signed case{plural} here: agreement {agree / len(rows):.0%}"
        with_label = [top for _, top, final in rows if label and final == label]
        if with_label:
            hits = sum(top == label for top in with_label)
            text += f", {label} sensitivity {hits / len(with_label):.0%} (n={len(with_label)})"
    else:
        change = deployment.changes.select_related("changed_by").filter(to_status=deployment.status).first()
        who = change.changed_by.get_username() if change and change.changed_by else "the installation"
        why = change.reason if change else "no reason recorded"
        text = f"{head}, no signed case here yet; set by {who}: {why}"
    return Evidence(
        status=deployment.status,
        since=since,
        text=text,
        validation_url=validation_url(deployment.model_name, deployment.model_version),
        signed_cases=cases,
    )


def evidence_for_case(case: Case) -> dict[tuple[str, str], Evidence]:
    """Evidence of each assistive version of the case's department, keyed by (name, version)."""
    department_id = case.patient.department_id
    return {
        (row.model_name, row.model_version): deployment_evidence(deployment=row)
        for row in ModelDeployment.objects.filter(department_id=department_id, status=Status.ASSISTIVE)
    }
