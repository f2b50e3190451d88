"""Configuration fails loudly at start-up, and production-like settings pass Django's deploy checks.

Each case runs in a fresh interpreter with a clean environment: settings are read once per
process, and the pytest process has its own configuration loaded already.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOAD_SETTINGS = "from django.conf import settings; settings.INSTALLED_APPS; print('settings loaded')"


@pytest.fixture
def clean_env(tmp_path) -> dict[str, str]:
    """Only what a bare shell has, plus a scratch folder for the SQLite default and broker."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "DJANGO_SETTINGS_MODULE": "xnet_site.settings",
        "XNET_VAR_DIR": str(tmp_path / "var"),
    }


def _python(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_defaults_load(clean_env):
    """The control case: without the bad variables below, the same command succeeds."""
    result = _python(["-c", LOAD_SETTINGS], clean_env)
    assert result.returncode == 0, result.stderr
    assert "settings loaded" in result.stdout


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        ({"XNET_MAX_UPLOAD_BYTES": "50MB"}, "XNET_MAX_UPLOAD_BYTES='50MB' is not an integer"),
        ({"XNET_MAX_UPLOAD_BYTES": "0"}, "XNET_MAX_UPLOAD_BYTES=0 must be at least 1"),
        ({"DATABASE_URL": "foo://bar"}, "DATABASE_URL='foo://bar'"),
        ({"XNET_JOB_TIME_LIMIT": "60", "XNET_JOB_STALE_AFTER": "60"}, "XNET_JOB_STALE_AFTER must be above"),
        ({"XNET_JOB_TIME_LIMIT": "60", "XNET_JOB_STALE_AFTER": "30"}, "XNET_JOB_STALE_AFTER must be above"),
        ({"XNET_JOB_TIME_LIMIT": "60", "CELERY_VISIBILITY_TIMEOUT": "60"}, "CELERY_VISIBILITY_TIMEOUT must be above"),
        ({"DEBUG": "false"}, "SECRET_KEY must be set when DEBUG is false"),
        ({"DEBUG": "false", "SECRET_KEY": ""}, "SECRET_KEY must be set when DEBUG is false"),
    ],
    ids=[
        "debug-maybe",
        "upload-bytes-with-unit",
        "upload-bytes-zero",
        "database-url-scheme",
        "stale-equals-limit",
        "stale-below-limit",
        "visibility-timeout",
        "no-secret-key",
        "empty-secret-key",
    ],
)
def test_bad_configuration_stops_start_up(clean_env, variables, message):
    result = _python(["-c", LOAD_SETTINGS], {**clean_env, **variables})
    assert result.returncode != 0
    assert "settings loaded" not in result.stdout
    assert "django.core.exceptions.ImproperlyConfigured" in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]


def test_deploy_check_is_clean_with_production_settings(clean_env):
    env = {
        **clean_env,
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "xnet.example.org",
        "DATABASE_URL": "postgres://xnet:secret@db.internal:5432/xnet",
        "CELERY_BROKER_URL": "redis://redis.internal:6379/0",
    }
    result = _python(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_deploy_check_catches_an_unsafe_setting(clean_env):
    """The check above can fail: production with DEBUG on is reported."""
    env = {**clean_env, "DEBUG": "true", "ALLOWED_HOSTS": "xnet.example.org", "SECRET_KEY": secrets.token_urlsafe(64)}
    result = _python(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode != 0
    assert "security.W018" in result.stderr  # DEBUG must not be True in deployment


def test_models_and_migrations_agree(clean_env):
    result = _python(["manage.py", "makemigrations", "--check", "--dry-run"], clean_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes detected" in result.stdout
