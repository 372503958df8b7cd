"""All the benchmarks in one run, as one JSON document.

Memory, discovery throughput ratio and cold start (issue 2); fan-out and inbox
ingest (issue 3); home timeline latency and inbound Creates (issue 4). Prints
one JSON document on stdout (progress on stderr) and exits 1 when a benchmark
could not run; a missed goal is reported in the JSON, not as a failure.

    python bench/run_all.py                 # the microfedi installed for this Python
    python bench/run_all.py --fresh-venv    # a new venv with only the runtime dependencies

A development environment holds test dependencies that change what the server
imports (httpx's HTTP core imports trio when it is installed; httpx's CLI pulls
in pygments), so `--fresh-venv` (what pipx installs on a Pi) gives the figures
that count. It installs this repo's working tree with pip, from PyPI or pip's cache.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import cold_start
import discovery_throughput
import fanout
import inbound_creates
import inbox_ingest
import memory
import timeline
from common import REPO_DIR, BenchError, code_under_test, machine_info, prepare_data_dir, progress


def run_in_fresh_venv(work_dir: Path) -> int:
    """Install the repo into a new venv and run this script again with its Python."""
    venv = work_dir / "venv"
    progress(f"creating {venv} and installing {REPO_DIR} into it (runtime dependencies only)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(REPO_DIR)],
        capture_output=True, text=True,
    )
    if installed.returncode != 0:
        progress(f"pip install failed:\n{installed.stderr.strip()}")
        return 1
    return subprocess.run([str(python), __file__]).returncode


def run_benchmarks(work_dir: Path) -> int:
    document: dict[str, object] = {"machine": machine_info(), "code": code_under_test()}
    data_dir = work_dir / "data"
    progress("preparing a data dir with the CLI (init, domains, users)")
    prepare_data_dir(data_dir)
    benchmarks: dict[str, Callable[[], dict[str, object]]] = {
        "memory": lambda: memory.run(data_dir, work_dir),
        "throughput": lambda: discovery_throughput.run(data_dir, work_dir),
        "cold_start": lambda: cold_start.run(),
        "fanout": lambda: fanout.run(work_dir),
        "inbox_ingest": lambda: inbox_ingest.run(work_dir),
        "timeline": lambda: timeline.run(work_dir),
        "inbound_creates": lambda: inbound_creates.run(work_dir),
    }
    failed = False
    for name, benchmark in benchmarks.items():
        try:
            document[name] = benchmark()
        except BenchError as exc:
            progress(f"{name}: {exc}")
            document[name] = {"error": str(exc)}
            failed = True
    document["goals_met"] = {name: document[name].get("goal_met") for name in benchmarks}  # type: ignore[attr-defined]
    print(json.dumps(document, indent=2))
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh-venv", action="store_true", help="install the repo into a new venv and measure that")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="microfedi-bench-") as tmp:
        if args.fresh_venv:
            return run_in_fresh_venv(Path(tmp))
        return run_benchmarks(Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
