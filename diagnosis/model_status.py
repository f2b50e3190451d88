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
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from accounts.models import Department, User
from diagnosis.models import (
    InferenceJob,
    Modality,
    ModelDeployment,
    ModelStartingStatus,
    ModelStatusChange,
    Prediction,
    job_assistive_deployments,
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
    key = _evidence_key(deployment.department_id, deployment.model_name, deployment.model_version)
    transaction.on_commit(lambda: cache.delete(key))
    return change


DEMO_REASON = "demo department, not for clinical use"


def demo_deployments(*, department: Department, site_admin: User | None) -> list[ModelDeployment]:
    """seed_demo's choice for its demo department, recorded like any site-admin override: the
    default X-ray model (the newest installed) is made assistive so the demo shows results, with
    the reason "demo department, not for clinical use"; CT stays silent (its shipped model has no
    external validation). Done once: a later change by an admin is never undone by a re-run."""
    from ml.registry import model_for

    deployments_sync(departments=[department])
    spec = model_for(Modality.XRAY, Path(settings.XNET_MODEL_DIR))
    if spec is None:
        return []
    row = ModelDeployment.objects.filter(
        department=department, model_name=spec.name, model_version=spec.version
    ).first()
    if row is None or ModelStatusChange.objects.filter(deployment=row, reason=DEMO_REASON).exists():
        return []
    return [
        deployment_set_status(
            deployment=row, status=Status.ASSISTIVE, changed_by=site_admin, reason=DEMO_REASON, override=True
        )
    ]


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
    department = OuterRef(f"{job_path}image__case__patient__department_id")
    return Q(Exists(job_assistive_deployments(department, job_path=job_path)))


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

    def as_json(self) -> dict:
        """What the API and the case page's status poll carry."""
        return {
            "status": self.status,
            "since": self.since,
            "evidence": self.text,
            "validation_url": self.validation_url,
        }


# Evidence facts are cached per process for this long (seconds): the line is read on every case
# page, API read and poll, and new signed cases move it slowly. A status change clears its key here;
# other processes notice within this time. Which results are shown is never cached.
EVIDENCE_TTL = 60


def _evidence_key(department_id: int, model_name: str, model_version: str) -> str:
    return f"xnet:model-evidence:{department_id}:{model_name}:{model_version}"


def _evidence_facts(deployment: ModelDeployment) -> dict:
    """This department's signed cases against this version's results, in one query: per image
    result, the model's top label against the report's final label."""
    rows = list(
        Prediction.objects.filter(
            job__model_name=deployment.model_name,
            job__model_version=deployment.model_version,
            job__status=InferenceJob.Status.SUCCEEDED,
            job__image__withdrawn_at__isnull=True,
            job__image__case__patient__department_id=deployment.department_id,
            job__image__case__report__isnull=False,
        ).values_list("job__image__case_id", "top_label", "job__image__case__report__final_label")
    )
    per_label: dict[str, list[int]] = {}
    for _, top, final in rows:
        counts = per_label.setdefault(final, [0, 0])
        counts[0] += top == final
        counts[1] += 1
    change = deployment.changes.select_related("changed_by").filter(to_status=deployment.status).first()
    return {
        "status": deployment.status,
        "since": timezone.localtime(deployment.status_since).date().isoformat(),
        "cases": len({case_id for case_id, _, _ in rows}),
        "results": len(rows),
        "agree": sum(top == final for _, top, final in rows),
        "per_label": per_label,
        "who": change.changed_by.get_username() if change and change.changed_by else "the installation",
        "why": change.reason if change else "no reason recorded",
    }


def _evidence_text(facts: dict, label: str | None) -> str:
    head = f"{facts['status']} since {facts['since']}"
    cases = facts["cases"]
    if not cases:
        return f"{head}, set by {facts['who']}: {facts['why']} (no signed case here to validate it on yet)"
    plural = "s" if cases != 1 else ""
    text = f"{head}, validated on {cases} signed case{plural} here: agreement {facts['agree'] / facts['results']:.0%}"
    hits, total = facts["per_label"].get(label, (0, 0)) if label else (0, 0)
    if total:
        text += f", {label} sensitivity {hits / total:.0%} (n={total})"
    return text


def deployment_evidence(*, deployment: ModelDeployment, label: str | None = None) -> Evidence:
    """ "assistive since 2026-12-10, validated on 212 signed cases here: agreement 88 %, pneumonia
    sensitivity 91 % (n=40)" from this department's signed reports; with no signed case yet,
    who set the status and why."""
    facts = _evidence_facts(deployment)
    return Evidence(
        status=deployment.status,
        since=facts["since"],
        text=_evidence_text(facts, label),
        validation_url=validation_url(deployment.model_name, deployment.model_version),
        signed_cases=facts["cases"],
    )


def result_evidence(
    *, department_id: int, model_name: str, model_version: str, label: str | None = None, use_cache: bool = True
):
    """The evidence line of a shown result (a job of an assistive version), or None when the
    version is not assistive in the department (then the result must not be shown at all).
    use_cache=False: computed now (a report records the line as it was when signed)."""
    key = _evidence_key(department_id, model_name, model_version)
    facts = cache.get(key) if use_cache else None
    if facts is None or facts.get("status") != Status.ASSISTIVE:
        deployment = ModelDeployment.objects.filter(
            department_id=department_id, model_name=model_name, model_version=model_version
        ).first()
        if deployment is None or deployment.status != Status.ASSISTIVE:
            return None
        facts = _evidence_facts(deployment)
        if use_cache:
            cache.set(key, facts, EVIDENCE_TTL)
    return Evidence(
        status=facts["status"],
        since=facts["since"],
        text=_evidence_text(facts, label),
        validation_url=validation_url(model_name, model_version),
        signed_cases=facts["cases"],
    )


def job_evidence_json(job: InferenceJob) -> dict | None:
    """job_evidence as the API and the status poll carry it (None: nothing shown for this job)."""
    evidence = job_evidence(job)
    return None if evidence is None else evidence.as_json()


def job_evidence(job: InferenceJob, *, use_cache: bool = True) -> Evidence | None:
    """result_evidence for a job (its image, case and patient loaded, as selectors load them)."""
    if not job.model_name:
        return None
    prediction = getattr(job, "prediction", None) if job.status == InferenceJob.Status.SUCCEEDED else None
    return result_evidence(
        department_id=job.image.case.patient.department_id,
        model_name=job.model_name,
        model_version=job.model_version,
        label=prediction.top_label if prediction is not None else None,
        use_cache=use_cache,
    )
