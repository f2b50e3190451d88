"""Shared set-up for the benchmarks: a dedicated PostgreSQL database and production-like settings.

Each benchmark calls `setup_django()` before importing any model. Environment variables that are
already set win, so a run can point at another database, broker or model folder.
"""

from __future__ import annotations

import os
import platform
import statistics
import warnings
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/xnet_bench"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/14"


def setup_django(scratch: Path) -> None:
    """Production-like settings (DEBUG off: no query log), on the benchmark database, migrated."""
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("CELERY_BROKER_URL", DEFAULT_BROKER_URL)
    os.environ.setdefault("DEBUG", "false")
    os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key-" + "x" * 40)
    # Django's test client sends plain HTTP to "testserver": allow it, and skip the HTTPS redirect.
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
    os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
    os.environ.setdefault("XNET_VAR_DIR", str(scratch / "var"))
    os.environ.setdefault("XNET_MEDIA_ROOT", str(scratch / "media"))
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["DJANGO_SETTINGS_MODULE"] = "xnet_site.settings"
    _create_database(os.environ["DATABASE_URL"])

    import django
    from django.core.management import call_command

    # DEBUG off makes WhiteNoise look for collectstatic's output, which a benchmark does not need.
    warnings.filterwarnings("ignore", message="No directory at")

    django.setup()
    call_command("migrate", verbosity=0)


def _create_database(url: str) -> None:
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        raise SystemExit(f"The benchmarks measure PostgreSQL; DATABASE_URL is {url}")
    import psycopg2
    from psycopg2 import sql

    name = parts.path.lstrip("/")
    connection = psycopg2.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or None,
        dbname="postgres",
    )
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone() is None:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        connection.close()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def summary(values: list[float]) -> tuple[float, float, float]:
    """p50, p95 and max (p95 interpolated between the sorted samples)."""
    p95 = statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]
    return statistics.median(values), p95, max(values)


def machine() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({platform.machine()}), load average {load}; "
        f"Python {platform.python_version()}; PostgreSQL {pg_version}"
    )
