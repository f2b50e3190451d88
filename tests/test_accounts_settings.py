"""The account-security settings come from the environment, strictly (see README, Configuration)."""

from __future__ import annotations

import json
import os

import pytest

from tests.test_settings import _python

PRINT = (
    "import json; from django.conf import settings; print(json.dumps({"
    "'idle': settings.SESSION_COOKIE_AGE, 'browser_close': settings.SESSION_EXPIRE_AT_BROWSER_CLOSE, "
    "'limit': settings.AXES_FAILURE_LIMIT, 'cooloff': settings.AXES_COOLOFF_TIME.total_seconds(), "
    "'by': settings.AXES_LOCKOUT_PARAMETERS, 'days': settings.XNET_API_TOKEN_DAYS}))"
)


@pytest.fixture
def bare_env(tmp_path) -> dict[str, str]:
    """What a bare shell has (as in tests/test_settings.py), plus the variables under test."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "xnet_site.settings",
        "XNET_VAR_DIR": str(tmp_path / "var"),
    }


def test_variables_set_the_idle_limit_lockout_and_token_lifetime(bare_env):
    env = {
        **bare_env,
        "XNET_SESSION_IDLE_MINUTES": "10",
        "XNET_LOGIN_FAILURE_LIMIT": "8",
        "XNET_LOGIN_LOCKOUT_MINUTES": "60",
        "XNET_LOGIN_LOCKOUT_BY_ADDRESS": "false",
        "XNET_API_TOKEN_DAYS": "7",
    }
    result = _python(["-c", f"import django; django.setup(); {PRINT}"], env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "idle": 600,
        "browser_close": True,
        "limit": 8,
        "cooloff": 3600.0,
        "by": ["username"],
        "days": 7,
    }


def test_a_malformed_idle_limit_stops_start_up(bare_env):
    result = _python(
        ["-c", f"import django; django.setup(); {PRINT}"], {**bare_env, "XNET_SESSION_IDLE_MINUTES": "30m"}
    )
    assert result.returncode != 0
    assert "XNET_SESSION_IDLE_MINUTES='30m' is not an integer" in result.stderr
