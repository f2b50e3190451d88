#!/usr/bin/env bash
# Run every check CI runs, on a fresh clone or a working copy:
#
#     ./scripts/test.sh                 # ruff, migrations check, the whole pytest suite
#     ./scripts/test.sh -m "not browser" tests/test_api_cases.py -x    # arguments go to pytest
#
# Creates or refreshes .venv from requirements-dev.txt, installs Debian's chromium and
# chromium-driver for the browser tests when they are missing (apt-get, as root or through
# sudo), and checks that PostgreSQL and Redis answer: the suite runs on the real services.
# DATABASE_URL and CELERY_BROKER_URL point it elsewhere (defaults in tests/testenv.py).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/venv.sh
source "$ROOT/scripts/venv.sh"

echo "==> Python packages (requirements-dev.txt)"
ensure_venv requirements-dev.txt
PY="$ROOT/.venv/bin/python"

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || [ ! -x /usr/sbin/Orthanc ]; then
    echo "==> Installing Debian's chromium and chromium-driver (browser tests) and orthanc (DICOM tests)"
    if [ "$(id -u)" = 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        echo "The browser tests need /usr/bin/chromium and /usr/bin/chromedriver, the DICOM tests /usr/sbin/Orthanc." >&2
        echo "Install them as root:    apt-get update && apt-get install -y chromium chromium-driver orthanc" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -q
    # fonts-liberation: a Recommends of chromium; without fonts, pages lay out differently.
    "${as_root[@]}" apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-liberation orthanc
fi

echo "==> PostgreSQL and Redis"
# The same defaults as the suite: tests/testenv.py is the one place they are written.
"$PY" - <<'EOF'
import os
import sys
from urllib.parse import urlsplit

import tests.testenv  # fills in the DATABASE_URL and CELERY_BROKER_URL defaults

problems = []
db = urlsplit(os.environ["DATABASE_URL"])
try:
    import psycopg2

    psycopg2.connect(
        host=db.hostname, port=db.port or 5432, user=db.username or "postgres",
        password=db.password or None, dbname="postgres", connect_timeout=3,
    ).close()
except Exception as exc:  # any failure means the same thing here
    problems.append(
        f"PostgreSQL does not answer at {db.hostname}:{db.port or 5432} ({str(exc).strip()}).\n"
        "    Start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
        "    or point DATABASE_URL at a server where user postgres may create databases."
    )
broker = os.environ["CELERY_BROKER_URL"]
if broker.startswith("redis://"):
    try:
        import redis

        redis.Redis.from_url(broker, socket_connect_timeout=3).ping()
    except Exception as exc:
        problems.append(
            f"Redis does not answer at {urlsplit(broker).netloc} ({exc}).\n"
            '    Start it: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no\n'
            "    or point CELERY_BROKER_URL at a Redis server."
        )
if problems:
    print("The test suite runs on real PostgreSQL and Redis:", *problems, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"    PostgreSQL {db.hostname}:{db.port or 5432} and broker {urlsplit(broker).netloc} answer")
EOF

echo "==> ruff check"
"$ROOT/.venv/bin/ruff" check .

echo "==> Migrations match the models"
# The history check needs an existing database "xnet"; the suite builds its own test database.
"$PY" -W "ignore:Got an error checking a consistent migration history:RuntimeWarning" -c '
import runpy
import sys

import tests.testenv  # the test environment, as pytest sees it

sys.argv = ["manage.py", "makemigrations", "--check", "--dry-run"]
runpy.run_path("manage.py", run_name="__main__")
'

echo "==> pytest $*"
exec "$PY" -m pytest "$@"
