#!/usr/bin/env bash
# Local quick start: a virtualenv in .venv, microfedi installed into it, and a
# running demo instance on http://localhost:8000 with a `localhost` domain and
# an admin user (the password is printed). Data lives in ./microfedi-demo.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/microfedi --data-dir ./microfedi-demo demo --port "${PORT:-8000}"
