#!/usr/bin/env bash
# Run XNET on this machine with nothing but Python 3.11 installed:
#
#     ./scripts/run.sh            # then open http://127.0.0.1:8000/ ; Ctrl-C stops everything
#
# Creates .venv and installs requirements.txt when needed, then runs the embedded setup:
# DEBUG on, SQLite in var/db.sqlite3, Celery over kombu's filesystem broker in var/broker/,
# uploads in var/media/. It migrates, seeds the demo accounts (printed below), and starts the
# web server, one Celery worker (queues xray, ct, maintenance, dicom), Celery beat (the sweeper) and
# the DICOM listener (manage.py run_dicom_listener, loopback port 11112).
#
# Every setting can be overridden from the environment (see README.md), e.g.
#     PORT=8080 XNET_MODEL_DIR=/srv/xnet/models ./scripts/run.sh
# Script-only knobs: PYTHON (interpreter for a new .venv), HOST (127.0.0.1), PORT (8000),
# XNET_WORKER_CONCURRENCY (worker processes; default: one per core, as in settings.py).
# With DEBUG=false the web server is gunicorn with xnet_site/gunicorn_conf.py, as in production.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/venv.sh
source "$ROOT/scripts/venv.sh"

export DEBUG="${DEBUG:-true}"
export PYTHONUNBUFFERED=1
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
CONCURRENCY="${XNET_WORKER_CONCURRENCY:-$(nproc)}"

ensure_venv requirements.txt
PY="$ROOT/.venv/bin/python"
# var/ holds the database, the broker's messages and the uploads: patient data, readable by
# this user only (Django also stores uploads 0600 in 0700 folders).
umask 077

echo "==> Database migrations"
"$PY" manage.py migrate --noinput
case "${DEBUG,,}" in
    0 | false | no | off)
        # Without DEBUG, WhiteNoise serves static files from STATIC_ROOT only.
        echo "==> Collecting static files"
        "$PY" manage.py collectstatic --noinput -v 0
        ;;
esac
case "${DEBUG,,}" in
    0 | false | no | off)
        # Demo accounts with published passwords do not belong on a production server
        # (seed_demo refuses there unless told --allow-production).
        echo "==> DEBUG is off: no demo accounts (create users with manage.py createsuperuser)"
        ;;
    *)
        echo "==> Demo accounts"
        "$PY" manage.py seed_demo
        ;;
esac
echo "==> ONNX Runtime copies of the installed models (converted once, when missing or stale)"
"$PY" -m ml.export_onnx --if-stale "${XNET_MODEL_DIR:-$ROOT/ml/models}" \
    || echo "    conversion failed: those models run on TensorFlow in the worker (same results, slower)"

PIDS=()
stopping=0

stop_all() {
    # Each child leads its own process group (setsid). SIGTERM to the leader lets the Celery
    # worker finish its task and stop its pool (warm shutdown); whatever is left of the group
    # after 15 s is killed.
    [ "$stopping" = 1 ] && return
    stopping=1
    trap - INT TERM HUP
    # Finish the clean-up even if the terminal or a pipe reader (| tee) is already gone.
    trap '' PIPE
    set +e
    echo
    echo "==> Stopping XNET"
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 150); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
        if kill -0 -- "-$pid" 2>/dev/null; then
            echo "    process group $pid did not stop within 15 s: killing it"
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
    echo "==> Stopped"
}

on_signal() {
    stop_all
    exit 0
}
trap on_signal INT TERM HUP
trap stop_all EXIT

start() {
    # start NAME COMMAND...: run in a new session, output prefixed with the name. The prefixing
    # sed ignores Ctrl-C, so it outlives the child and shows its shutdown messages.
    local name="$1"
    shift
    setsid "$@" > >(trap '' INT HUP; exec sed -u "s/^/[$name] /") 2>&1 < /dev/null &
    PIDS+=("$!")
}

echo "==> Starting web server, Celery worker, Celery beat and the DICOM listener"
case "${DEBUG,,}" in
    0 | false | no | off)
        # Production-like: gunicorn with XNET's settings (access log without query strings,
        # request line and header limits), as in README's production section.
        start web "$ROOT/.venv/bin/gunicorn" -c python:xnet_site.gunicorn_conf --workers 2 \
            --bind "$HOST:$PORT" xnet_site.wsgi
        ;;
    *) start web "$PY" manage.py runserver --noreload "$HOST:$PORT" ;;
esac
start worker "$ROOT/.venv/bin/celery" -A xnet_site worker -Q xray,ct,maintenance,dicom -c "$CONCURRENCY" \
    -n "xnet-local@%h" --without-gossip --without-mingle -l INFO
start beat "$ROOT/.venv/bin/celery" -A xnet_site beat -l INFO
# DICOM listener (C-STORE/C-ECHO from the departments' nodes): XNET_DICOM_AE_TITLE, XNET_DICOM_HOST
# (127.0.0.1 by default) and XNET_DICOM_PORT (11112).
start dicom "$PY" manage.py run_dicom_listener

URL="http://$HOST:$PORT/"
up=0
for _ in $(seq 1 240); do
    # Any HTTP answer, even an error page, means the server is up; only a refused connection
    # means wait.
    if "$PY" -c '
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass' "${URL}accounts/login/" 2>/dev/null; then
        up=1
        break
    fi
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || { echo "A process stopped during start-up; see its output above." >&2; exit 1; }
    done
    sleep 0.5
done
if [ "$up" = 0 ]; then
    echo "The web server did not answer at $URL within two minutes." >&2
    exit 1
fi

echo
echo "==> XNET is running at $URL  (Ctrl-C stops the web server, the worker and beat)"
echo

# Any child that exits on its own ends the whole run: a half-running XNET would hide problems.
status=0
wait -n "${PIDS[@]}" || status=$?
if [ "$stopping" = 0 ]; then
    echo "A process stopped unexpectedly (exit $status); stopping the others." >&2
    stop_all
    exit 1
fi
