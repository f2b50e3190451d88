"""`manage.py check_drift`: the daily drift check by hand, for chosen weeks or a department."""

from __future__ import annotations

from datetime import date

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Department
from modelops import services


def iso_week(value: str) -> date:
    """ "2026-W48" -> the Monday of that ISO week."""
    try:
        year, week = value.upper().split("-W")
        return date.fromisocalendar(int(year), int(week), 1)
    except ValueError as exc:
        raise CommandError(f"{value!r} is not an ISO week like 2026-W48.") from exc


class Command(BaseCommand):
    help = "Compare the last complete weeks of every active model version with its test split; raise drift alarms."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--week", action="append", help="an ISO week to check, e.g. 2026-W48 (repeatable)")
        parser.add_argument("--department", type=int, help="only this department (id)")

    def handle(self, *args, week=None, department=None, **options) -> None:
        if department is not None and not Department.objects.filter(pk=department).exists():
            raise CommandError(f"No department with id {department}.")
        weeks = [iso_week(value) for value in week] if week else None
        alarms = services.drift_check(weeks=weeks, department_id=department)
        for alarm in alarms:
            out = ", ".join(services.describe_statistic(c["statistic"]) for c in alarm.out_of_band)
            self.stdout.write(f"ALARM {alarm}: {out}; mailed to {len(alarm.emailed_to)} admin(s)")
        self.stdout.write(f"{len(alarms)} drift alarm(s) raised.")
