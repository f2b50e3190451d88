# Sourced by scripts/run.sh and scripts/test.sh: the project's virtual environment in .venv.
# shellcheck shell=bash

find_python() {
    # The interpreter for a new .venv: $PYTHON, else the first python3.11+ on PATH.
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

ensure_venv() {
    # ensure_venv REQUIREMENTS_FILE: create .venv if missing, then install the pinned packages.
    # pip takes about a second when everything is installed already, so this runs every time
    # and a changed requirements file is picked up by the next run.
    local requirements="$1" python
    if [ ! -x .venv/bin/python ]; then
        if ! python="$(find_python)"; then
            echo "XNET needs Python 3.11 or newer: install it, or set PYTHON=/path/to/python3.11." >&2
            exit 1
        fi
        echo "==> Creating .venv with $python ($("$python" --version 2>&1))"
        "$python" -m venv .venv
        echo "==> Installing $requirements (the first time downloads TensorFlow: a few minutes)"
    fi
    .venv/bin/python -m pip install --disable-pip-version-check -q -r "$requirements"
}
