"""Promotion and demotion with local-evidence thresholds, and the weekly drift check.

Status changes themselves (history row, audit event, the previous assistive version stepping
down) are diagnosis.model_status.deployment_set_status; this module decides whether one may
happen. A refusal raises ModelOpsRefusal with a message for the user and writes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.mail import send_mail
from django.db import IntegrityError, transaction

from accounts.models import User
from audit.models import AuditEvent
from audit.services import audit_record
from diagnosis.model_status import deployment_set_status
from diagnosis.models import ModelDeployment
from modelops import metrics as M
from modelops import selectors
from modelops.models import DriftAlarm

logger = logging.getLogger(__name__)
Status = ModelDeployment.Status


class ModelOpsRefusal(Exception):
    """The change is refused by a rule (threshold, state): a 409 on pages and in the API."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def can_manage_models(user: User, department_id: int) -> bool:
    """Department admins of that department, and site admins."""
    return bool(
        user.is_active and (user.is_superuser or (user.is_department_admin and user.department_id == department_id))
    )


def promotion_shortfall(validation: selectors.Validation, minimum: int) -> dict[str, int]:
    """Classes with fewer than `minimum` signed cases the version gave a result for: label -> count."""
    return {label: n for label, n in validation.signed_per_class.items() if n < minimum}


def _min_per_class() -> int:
    return int(settings.XNET_PROMOTION_MIN_SIGNED_PER_CLASS)


def deployment_promote(
    *,
    deployment: ModelDeployment,
    user: User,
    reason: str,
    override: bool = False,
    previous_becomes: str = Status.SILENT,
) -> ModelDeployment:
    """Silent -> assistive, replacing the department's assistive version of the modality (which
    becomes silent or retired). Refused below XNET_PROMOTION_MIN_SIGNED_PER_CLASS signed cases in
    any class, unless a site admin overrides (with the reason, marked in the history)."""
    if not can_manage_models(user, deployment.department_id):
        raise PermissionDenied("Only this department's admins and site admins change model statuses.")
    if previous_becomes not in (Status.SILENT, Status.RETIRED):
        raise ModelOpsRefusal("The replaced version becomes silent or retired.", code="invalid_previous_status")
    if deployment.status == Status.ASSISTIVE:
        raise ModelOpsRefusal(f"{deployment.model_name} {deployment.model_version} is assistive already.", "no_change")
    if deployment.status == Status.RETIRED:
        raise ModelOpsRefusal(
            f"{deployment.model_name} {deployment.model_version} is retired: it has not run on recent images. "
            "Make it silent first and validate it on new signed cases.",
            code="retired",
        )
    if override and not user.is_superuser:
        raise ModelOpsRefusal("Only a site admin can override the promotion threshold.", code="override_forbidden")
    minimum = _min_per_class()
    result = selectors.validation(
        department_id=deployment.department_id, name=deployment.model_name, version=deployment.model_version
    )
    short = promotion_shortfall(result, minimum)
    if short and not override:
        listed = ", ".join(f"{label} {n}" for label, n in short.items())
        raise ModelOpsRefusal(
            f"Promotion needs at least {minimum} signed cases per class with a result of this version here; "
            f"too few for: {listed}. A site admin can override with a reason.",
            code="too_few_signed_cases",
        )
    used_override = bool(short and override)
    text = reason
    if used_override:
        listed = ", ".join(f"{label} {n}" for label, n in short.items())
        text = f"{reason} [site admin override: fewer than {minimum} signed cases for {listed}]"
    with transaction.atomic():
        previous = selectors.ModelDeployment.objects.filter(
            department_id=deployment.department_id, modality=deployment.modality, status=Status.ASSISTIVE
        ).first()
        promoted = deployment_set_status(
            deployment=deployment, status=Status.ASSISTIVE, changed_by=user, reason=text, override=used_override
        )
        if previous is not None and previous.pk != deployment.pk and previous_becomes == Status.RETIRED:
            previous.refresh_from_db()
            deployment_set_status(
                deployment=previous,
                status=Status.RETIRED,
                changed_by=user,
                reason=f"retired on promoting {deployment.model_name} {deployment.model_version}: {reason}",
            )
    return promoted


def deployment_demote(*, deployment: ModelDeployment, user: User, reason: str, to_status: str) -> ModelDeployment:
    """Assistive -> silent or retired, or silent -> retired. A department left without an
    assistive version shows no AI result for the modality (the case page says so)."""
    if not can_manage_models(user, deployment.department_id):
        raise PermissionDenied("Only this department's admins and site admins change model statuses.")
    order = {Status.RETIRED: 0, Status.SILENT: 1, Status.ASSISTIVE: 2}
    if to_status not in (Status.SILENT, Status.RETIRED):
        raise ModelOpsRefusal("A version is demoted to silent or retired.", code="invalid_status")
    if order[to_status] >= order[deployment.status]:
        raise ModelOpsRefusal(
            f"{deployment.model_name} {deployment.model_version} is {deployment.status}; it cannot be demoted "
            f"to {to_status}.",
            code="no_change",
        )
    return deployment_set_status(deployment=deployment, status=to_status, changed_by=user, reason=reason)


# Drift ------------------------------------------------------------------------------------------


def weeks_to_check(today: date, lookback: int) -> list[date]:
    """The Mondays of the last `lookback` complete ISO weeks before `today`, oldest first."""
    this_week = selectors.week_start_of(today)
    return [this_week - timedelta(weeks=n) for n in range(lookback, 0, -1)]


def _checks_json(checks: list[M.Check]) -> list[dict]:
    return [
        {
            "statistic": c.statistic,
            "observed": round(c.observed, 6),
            "n": c.n,
            "low": None if c.band is None else round(c.band.low, 6),
            "high": None if c.band is None else round(c.band.high, 6),
            "out_of_band": c.out_of_band,
        }
        for c in checks
    ]


def _department_admin_emails(department_id: int) -> list[str]:
    admins = (
        get_user_model()
        .objects.filter(department_id=department_id, role=User.Role.DEPARTMENT_ADMIN, is_active=True)
        .exclude(email="")
    )
    return sorted(admins.values_list("email", flat=True))


def _alarm_mail(alarm: DriftAlarm) -> tuple[str, str]:
    lines = [
        f"{alarm.model_name} {alarm.model_version} behaved unlike its test split in {alarm.department.name} "
        f"in week {alarm.iso_week} ({alarm.week_start} to {alarm.week_end}).",
        "",
        "Out of band:",
    ]
    for check in alarm.out_of_band:
        lines.append(
            f"- {describe_statistic(check['statistic'])}: {check['observed']:.1%} of {check['n']} "
            f"(band {check['low']:.1%} to {check['high']:.1%})"
            if check["statistic"] != "mean_top_probability"
            else f"- mean top probability: {check['observed']:.3f} over {check['n']} images "
            f"(band {check['low']:.3f} to {check['high']:.3f})"
        )
    lines += ["", "Look at the dashboard and the version's validation page before trusting its results further."]
    return f"[XNET] Drift alarm: {alarm.model_name} {alarm.model_version}, week {alarm.iso_week}", "\n".join(lines)


def describe_statistic(statistic: str) -> str:
    if statistic.startswith("predicted:"):
        return f"images predicted {statistic.split(':', 1)[1]}"
    return {
        "mean_top_probability": "mean top probability",
        "refusal_rate": "gate refusal rate",
        "ood_tail": "images beyond the gate's feature-distance threshold",
        "agreement": "agreement with signed labels",
    }.get(statistic, statistic)


@dataclass
class DriftWeek:
    """One week of one deployment beside its bands, for the validation page."""

    start: date
    stats: M.WeekStats
    checks: list[M.Check]

    @property
    def label(self) -> str:
        year, week, _ = self.start.isocalendar()
        return f"{year}-W{week:02d}"

    def check(self, statistic: str) -> M.Check | None:
        return next((c for c in self.checks if c.statistic == statistic), None)

    @property
    def out_of_band(self) -> list[M.Check]:
        return [c for c in self.checks if c.out_of_band]

    @property
    def distance_median(self) -> float | None:
        return self.stats.distance_quantile(0.5)

    @property
    def distance_p90(self) -> float | None:
        return self.stats.distance_quantile(0.9)


def drift_weeks(*, deployment: ModelDeployment, weeks: list[date]) -> list[DriftWeek] | None:
    """The weekly statistics of a deployment with their bands, newest week first; None when the
    version's folder (its reference figures) is not installed."""
    spec = selectors.model_spec(deployment.model_name, deployment.model_version)
    if spec is None:
        return None
    reference = M.DriftReference.from_model_json(spec.card)
    result = []
    for week_start in sorted(weeks, reverse=True):
        stats = selectors.week_stats(
            department_id=deployment.department_id,
            name=deployment.model_name,
            version=deployment.model_version,
            week_start=week_start,
        )
        checks = M.evaluate_week(
            reference, stats, alpha=settings.XNET_DRIFT_ALPHA, min_n=settings.XNET_DRIFT_MIN_WEEKLY_N
        )
        result.append(DriftWeek(start=week_start, stats=stats, checks=checks))
    return result


def drift_check_week(*, deployment: ModelDeployment, week_start: date) -> DriftAlarm | None:
    """Judge one week of one deployment; raise (store, audit, e-mail) an alarm when any statistic
    is out of band. None when in band, when the week was alarmed before, or when the version's
    folder is gone (no reference to compare with)."""
    key = {
        "department_id": deployment.department_id,
        "model_name": deployment.model_name,
        "model_version": deployment.model_version,
        "week_start": week_start,
    }
    if DriftAlarm.objects.filter(**key).exists():
        return None
    spec = selectors.model_spec(deployment.model_name, deployment.model_version)
    if spec is None:
        return None
    reference = M.DriftReference.from_model_json(spec.card)
    stats = selectors.week_stats(
        department_id=deployment.department_id,
        name=deployment.model_name,
        version=deployment.model_version,
        week_start=week_start,
    )
    checks = M.evaluate_week(reference, stats, alpha=settings.XNET_DRIFT_ALPHA, min_n=settings.XNET_DRIFT_MIN_WEEKLY_N)
    if not any(check.out_of_band for check in checks):
        return None
    try:
        with transaction.atomic():
            alarm = DriftAlarm.objects.create(modality=deployment.modality, checks=_checks_json(checks), **key)
            audit_record(
                action=AuditEvent.Action.DRIFT_ALARM,
                department_id=deployment.department_id,
                object_type="drift_alarm",
                object_id=alarm.pk,
                detail={
                    "model": f"{deployment.model_name} {deployment.model_version}",
                    "week": alarm.iso_week,
                    "out_of_band": [c["statistic"] for c in alarm.out_of_band],
                },
            )
    except IntegrityError:  # another check run raised it in the meantime
        return None
    recipients = _department_admin_emails(deployment.department_id)
    if recipients:
        subject, body = _alarm_mail(alarm)
        try:
            send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients, fail_silently=False)
        except Exception:  # the alarm stands (dashboard, audit); emailed_to stays empty, which shows it
            logger.exception("Could not e-mail drift alarm %s to %s", alarm, recipients)
        else:
            DriftAlarm.objects.filter(pk=alarm.pk).update(emailed_to=recipients)
            alarm.emailed_to = recipients
    logger.warning("Drift alarm raised: %s", alarm)
    return alarm


def drift_check(*, today: date | None = None, weeks: list[date] | None = None, department_id: int | None = None):
    """Every active deployment (silent and assistive) over the last XNET_DRIFT_LOOKBACK_WEEKS
    complete weeks, or the given weeks. Daily from Celery beat and `manage.py check_drift`;
    idempotent. Returns the alarms raised by this run."""
    from django.utils import timezone

    today = today or timezone.localdate()
    weeks = weeks if weeks is not None else weeks_to_check(today, settings.XNET_DRIFT_LOOKBACK_WEEKS)
    deployments = ModelDeployment.objects.filter(status__in=ModelDeployment.ACTIVE).select_related("department")
    if department_id is not None:
        deployments = deployments.filter(department_id=department_id)
    raised = []
    for deployment in deployments:
        for week_start in weeks:
            alarm = drift_check_week(deployment=deployment, week_start=week_start)
            if alarm is not None:
                raised.append(alarm)
    return raised
