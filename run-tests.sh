#!/usr/bin/env bash
# The whole test suite: makes .venv if needed, installs microfedi with its test
# dependencies, and runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source ./venv.sh "[test]"
exec .venv/bin/python -m pytest "$@"
