"""Demo accounts for a local run: one department, a radiologist, its department admin, a site admin.

`./scripts/run.sh` calls this at every start, so it must be idempotent: existing accounts keep
the password their owner may have changed, unless the operator asks for a reset (an explicit
XNET_DEMO_*_PASSWORD variable or --reset-passwords). The passwords are printed, so the command
refuses to run with DEBUG off unless told that this really is a demo server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.models import Department, User

DEMO_DEPARTMENT = "Demo Radiology"


@dataclass(frozen=True)
class DemoAccount:
    username: str
    label: str
    env_var: str
    default_password: str
    role: str = User.Role.RADIOLOGIST
    in_department: bool = True
    superuser: bool = False

    @property
    def password(self) -> str:
        return os.environ.get(self.env_var) or self.default_password

    @property
    def password_from_env(self) -> bool:
        return bool(os.environ.get(self.env_var))


DEMO_ACCOUNTS = (
    DemoAccount(
        username="radiologist",
        label="Radiologist",
        env_var="XNET_DEMO_RADIOLOGIST_PASSWORD",
        default_password="demo-radiologist-2026",  # noqa: S106 - a published demo password
    ),
    DemoAccount(
        username="deptadmin",
        label="Department admin",
        env_var="XNET_DEMO_DEPT_ADMIN_PASSWORD",
        default_password="demo-deptadmin-2026",  # noqa: S106 - a published demo password
        role=User.Role.DEPARTMENT_ADMIN,
    ),
    DemoAccount(
        username="admin",
        label="Site admin (Django admin at /admin/)",
        env_var="XNET_DEMO_ADMIN_PASSWORD",
        default_password="demo-siteadmin-2026",  # noqa: S106 - a published demo password
        in_department=False,
        superuser=True,
    ),
)


def _ensure_account(account: DemoAccount, department: Department, *, reset_password: bool) -> tuple[User, str]:
    """Create or repair one account; returns it and what happened to its password."""
    user = User.objects.filter(username=account.username).first()
    created = user is None
    if created:
        user = User(username=account.username, email=f"{account.username}@demo.example")
    # Repair what makes the account usable for the demo; leave names and email alone.
    user.department = department if account.in_department else None
    user.role = account.role
    user.is_active = True
    user.is_staff = account.superuser
    user.is_superuser = account.superuser
    if created or reset_password or account.password_from_env:
        try:
            validate_password(account.password, user)
        except ValidationError as exc:
            raise CommandError(f"{account.env_var}: {' '.join(exc.messages)}") from None
        user.set_password(account.password)
        state = "set"
    else:
        state = "kept" if user.check_password(account.password) else "changed"
    user.full_clean()
    user.save()
    return user, state


class Command(BaseCommand):
    help = "Create (or repair) the demo department and its demo accounts, then print how to log in."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset-passwords",
            action="store_true",
            help="Set every demo account back to its printed password, even if someone changed it.",
        )
        parser.add_argument(
            "--allow-production",
            action="store_true",
            help="Run even with DEBUG off (the demo passwords are printed and published).",
        )

    def handle(self, *args, reset_passwords: bool = False, allow_production: bool = False, **options) -> None:
        if not settings.DEBUG and not allow_production:
            raise CommandError(
                "DEBUG is off: refusing to create demo accounts with published passwords. "
                "Pass --allow-production if this really is a demo server."
            )
        with transaction.atomic():
            department, _ = Department.objects.get_or_create(name=DEMO_DEPARTMENT)
            results = [
                (account, *_ensure_account(account, department, reset_password=reset_passwords))
                for account in DEMO_ACCOUNTS
            ]

        # Issue 12: models start silent; the demo department's X-ray model is made assistive by a
        # recorded site-admin override so the demo shows results (not for clinical use), CT stays silent.
        from diagnosis.model_status import DEMO_REASON, active_deployments, demo_deployments

        site_admin = next((user for account, user, _ in results if account.superuser), None)
        demo_deployments(department=department, site_admin=site_admin)
        statuses = [
            row for modality in ("xray", "ct") for row in active_deployments(department=department, modality=modality)
        ]

        self.stdout.write(f"Demo accounts (department {department.name!r}):")
        for account, user, state in results:
            if state == "changed":
                shown = "(changed since it was seeded; `manage.py seed_demo --reset-passwords` restores it)"
            else:
                shown = account.password
            self.stdout.write(f"  {account.label:<38} username {user.username:<12} password {shown}")
        self.stdout.write(
            "The department admin and the site admin set up two-factor authentication (an authenticator app) "
            "at their first login."
        )
        self.stdout.write(f"Model statuses in {department.name!r} (assistive models' results are shown):")
        for row in statuses:
            self.stdout.write(f"  {row.model_name} {row.model_version} ({row.modality}): {row.status}")
        if not any(row.status == "assistive" for row in statuses):
            self.stdout.write("  no model is assistive: images are stored for reading, no AI result is shown")
        else:
            self.stdout.write(f"  (the assistive X-ray model was set by the site admin: {DEMO_REASON})")
