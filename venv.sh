# Sourced by quickstart.sh and run-tests.sh: make .venv if needed and install
# microfedi into it, with the extras named in $1 (e.g. "[test]").
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".${1:-}"
