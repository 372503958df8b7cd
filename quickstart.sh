#!/usr/bin/env bash
# Local quick start: a virtualenv in .venv, microfedi installed into it, and a
# running demo instance on http://localhost:8000 with a `localhost` domain and
# an admin user (the password is printed). Data lives in ./microfedi-demo.
set -euo pipefail
cd "$(dirname "$0")"
source ./venv.sh ""
exec .venv/bin/microfedi --data-dir ./microfedi-demo demo --port "${PORT:-8000}"
