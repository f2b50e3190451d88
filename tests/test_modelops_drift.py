"""Drift alarms: a synthetic shift (a week of images all predicted one class) raises exactly one
alarm, one audit event and one e-mail to the department admins; a week like the test split raises
none; the check is idempotent; the weekly statistics are read per image's latest job."""

# ruff: noqa: F811 - the fixtures imported from test_modelops_validation are requested by name
from __future__ import annotations

import re
from datetime import date, datetime, timedelta

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit.models import AuditEvent
from modelops import selectors, services, tasks
from modelops.models import DriftAlarm
from tests.factories import CaseFactory, DepartmentAdminFactory, ImageFactory, PatientFactory, UserFactory
from tests.test_modelops_validation import (  # noqa: F401 - fixtures
    NEW,
    OLD,
    add_results,
    dept,
    model_folders,
    signed_case,
)

pytestmark = pytest.mark.django_db

SHIFTED = date(2026, 11, 16)  # a Monday
NORMAL_WEEK = date(2026, 11, 9)
# The shipped model's test split predicts, of 1557 images: normal 661, pneumonia 640, covid 236,
# tuberculosis 20. A week of 40 images in about those shares:
LIKE_TEST = {"normal": 17, "pneumonia": 16, "covid": 6, "tuberculosis": 1}
GATE = {"ood_distance": 10.0, "ood_threshold": 43.7}


def week_of_images(department, week_start: date, labels: dict[str, int], *, key=NEW, probability=0.8) -> None:
    user = UserFactory(department=department)
    patient = PatientFactory(department=department, created_by=user)
    when = timezone.make_aware(datetime.combine(week_start, datetime.min.time())) + timedelta(days=2, hours=10)
    for label, n in labels.items():
        for _ in range(n):
            case = CaseFactory(patient=patient, created_by=user)
            add_results(ImageFactory(case=case, uploaded_at=when), {key: (label, probability)}, gate_scores=GATE)


@pytest.fixture
def admins(dept):
    return [
        DepartmentAdminFactory(username="drift_admin", department=dept, email="drift_admin@hospital.example"),
        DepartmentAdminFactory(username="no_mail_admin", department=dept, email=""),
    ]


def test_week_statistics(dept):
    week_of_images(dept, NORMAL_WEEK, {"normal": 3, "covid": 1})
    signed_case(
        dept,
        "normal",
        {NEW: ("covid", 0.9)},
        uploaded_at=timezone.make_aware(datetime.fromisoformat("2026-11-10T09:00")),
    )
    stats = selectors.week_stats(department_id=dept.pk, name=NEW[0], version=NEW[1], week_start=NORMAL_WEEK)
    assert stats.predicted == {"normal": 3, "covid": 2}
    assert (stats.judged, stats.refused, stats.signed, stats.agreed) == (5, 0, 1, 0)
    assert stats.mean_top_probability == pytest.approx((0.8 * 4 + 0.9) / 5)
    assert stats.distances == [pytest.approx(10 / 43.7)] * 4  # the signed case's job has no gate scores
    # Another version, another week: nothing.
    assert selectors.week_stats(department_id=dept.pk, name=OLD[0], version=OLD[1], week_start=NORMAL_WEEK).judged == 0
    assert selectors.week_stats(department_id=dept.pk, name=NEW[0], version=NEW[1], week_start=SHIFTED).judged == 0


def test_a_shifted_week_raises_exactly_one_alarm_and_one_mail(dept, admins):
    week_of_images(dept, NORMAL_WEEK, LIKE_TEST)
    week_of_images(dept, SHIFTED, {"covid": 40})
    raised = services.drift_check(weeks=[NORMAL_WEEK, SHIFTED])
    assert len(raised) == 1
    alarm = DriftAlarm.objects.get()
    assert (alarm.model_name, alarm.model_version, alarm.week_start, alarm.department) == (*NEW, SHIFTED, dept)
    assert alarm.iso_week == "2026-W47"
    out = {c["statistic"] for c in alarm.out_of_band}
    assert out == {"predicted:normal", "predicted:pneumonia", "predicted:covid"}
    covid = next(c for c in alarm.checks if c["statistic"] == "predicted:covid")
    assert (covid["observed"], covid["n"]) == (1.0, 40)
    assert covid["high"] < 0.5

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["drift_admin@hospital.example"]
    assert message.subject == "[XNET] Drift alarm: cxr-new 2.0.0, week 2026-W47"
    assert "images predicted covid: 100.0% of 40" in message.body
    assert alarm.emailed_to == ["drift_admin@hospital.example"]

    event = AuditEvent.objects.get(action=AuditEvent.Action.DRIFT_ALARM)
    assert event.department_id == dept.pk
    assert event.detail["week"] == "2026-W47"
    assert event.detail["model"] == "cxr-new 2.0.0"

    # The daily check runs again: nothing new.
    assert services.drift_check(weeks=[NORMAL_WEEK, SHIFTED]) == []
    assert DriftAlarm.objects.count() == 1
    assert len(mail.outbox) == 1


def test_a_week_like_the_test_split_raises_none(dept, admins):
    week_of_images(dept, NORMAL_WEEK, LIKE_TEST)
    assert services.drift_check(weeks=[NORMAL_WEEK]) == []
    assert not DriftAlarm.objects.exists()
    assert mail.outbox == []


def test_a_small_week_is_not_judged(dept, admins):
    week_of_images(dept, SHIFTED, {"covid": 5})  # under XNET_DRIFT_MIN_WEEKLY_N (20)
    assert services.drift_check(weeks=[SHIFTED]) == []


def test_retired_versions_are_not_checked(dept, admins):
    from diagnosis.model_status import deployment_set_status
    from diagnosis.models import ModelDeployment

    week_of_images(dept, SHIFTED, {"covid": 40})
    deployment = ModelDeployment.objects.get(department=dept, model_name=NEW[0])
    deployment_set_status(deployment=deployment, status="retired", changed_by=None, reason="test")
    assert services.drift_check(weeks=[SHIFTED]) == []


def test_daily_check_looks_at_the_last_complete_weeks(dept, admins, settings):
    settings.XNET_DRIFT_LOOKBACK_WEEKS = 2
    assert services.weeks_to_check(date(2026, 11, 25), 2) == [date(2026, 11, 9), date(2026, 11, 16)]
    week_of_images(dept, SHIFTED, {"covid": 40})
    assert services.drift_check(today=date(2026, 11, 22)) == []  # the shifted week is not complete yet
    (alarm,) = services.drift_check(today=date(2026, 11, 25))
    assert alarm.week_start == SHIFTED


def test_the_celery_task_and_the_command(dept, admins, capsys):
    week_of_images(dept, SHIFTED, {"covid": 40})
    call_command("check_drift", "--week", "2026-W47")
    output = capsys.readouterr().out
    assert "ALARM Drift of cxr-new 2.0.0 in Validation dept, week 2026-W47" in output
    assert "1 drift alarm(s) raised." in output
    assert tasks.check_drift.run() == 0  # the lookback weeks of today hold nothing new
    with pytest.raises(CommandError, match="is not an ISO week"):
        call_command("check_drift", "--week", "2026-47")
    with pytest.raises(CommandError, match="No department with id 999999"):
        call_command("check_drift", "--department", "999999")


def test_email_backend_defaults_to_console():
    from xnet_site import settings as project_settings

    assert project_settings.EMAIL_BACKEND == "django.core.mail.backends.console.EmailBackend"


def test_validation_page_shows_the_weeks_against_their_bands(dept, admins, client):
    from django.urls import reverse

    last_week = selectors.week_start_of(timezone.localdate()) - timedelta(weeks=1)
    two_weeks_ago = last_week - timedelta(weeks=1)
    week_of_images(dept, last_week, {"covid": 40})
    week_of_images(dept, two_weeks_ago, LIKE_TEST)
    client.force_login(admins[0])
    page = client.get(reverse("modelops:validation", args=NEW)).content.decode()
    rows = {
        week: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
        for week, html in re.findall(r'<tr data-week="([^"]+)"[^>]*>(.*?)</tr>', page, flags=re.S)
    }
    assert len(rows) == 8
    shifted = "{}-W{:02d}".format(*last_week.isocalendar()[:2])
    normal = "{}-W{:02d}".format(*two_weeks_ago.isocalendar()[:2])
    assert f'<tr data-week="{shifted}" class="out-of-band">' in page
    assert "images predicted normal; images predicted pneumonia; images predicted covid" in rows[shifted]
    assert "0.23 / 0.23" in rows[shifted]  # distance over threshold: 10 / 43.7
    assert "0.0% (band 0.0%–" in rows[shifted]  # refusals, judged
    assert rows[normal].strip().endswith("none")
    assert f'<tr data-week="{normal}">' in page


def test_the_alarm_is_in_the_departments_audit_log(dept, admins, client):
    from django.urls import reverse

    from tests.factories import TOTPDeviceFactory

    week_of_images(dept, SHIFTED, {"covid": 40})
    services.drift_check(weeks=[SHIFTED])
    TOTPDeviceFactory(user=admins[0])
    client.force_login(admins[0])
    response = client.get(reverse("audit_log"), {"action": "drift_alarm"})
    assert response.status_code == 200
    assert "A model drifted (weekly drift alarm)" in response.content.decode()


def test_site_admin_reads_alarms_in_the_django_admin(dept, admins, client, django_user_model):
    from tests.factories import TOTPDeviceFactory

    week_of_images(dept, SHIFTED, {"covid": 40})
    (alarm,) = services.drift_check(weeks=[SHIFTED])
    root = django_user_model.objects.create_superuser("root", "root@example.org", "x-very-long-pw")
    TOTPDeviceFactory(user=root)
    client.force_login(root)
    listing = client.get("/admin/modelops/driftalarm/")
    assert listing.status_code == 200
    assert "cxr-new" in listing.content.decode()
    assert client.get(f"/admin/modelops/driftalarm/{alarm.pk}/change/").status_code == 200
    assert client.post(f"/admin/modelops/driftalarm/{alarm.pk}/delete/", {"post": "yes"}).status_code == 403
    assert DriftAlarm.objects.filter(pk=alarm.pk).exists()


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"XNET_DRIFT_ALPHA": "one in a thousand"}, "XNET_DRIFT_ALPHA must be a number, e.g. 0.001"),
        ({"XNET_DRIFT_ALPHA": "1.5"}, "XNET_DRIFT_ALPHA must be between 0 and 1"),
        ({"XNET_PROMOTION_MIN_SIGNED_PER_CLASS": "0"}, "XNET_PROMOTION_MIN_SIGNED_PER_CLASS=0 must be at least 1"),
    ],
)
def test_bad_modelops_settings_stop_start_up(tmp_path, variables, message):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "xnet_site.settings",
        "XNET_VAR_DIR": str(tmp_path / "var"),
        **variables,
    }
    code = "from django.conf import settings; settings.INSTALLED_APPS; print('settings loaded')"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "settings loaded" not in result.stdout
    assert message in result.stderr.strip().splitlines()[-1]
